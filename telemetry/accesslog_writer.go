package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/meshlet/meshlet/state"
)

// logWriter owns one destination: a bounded queue of rendered lines and
// the goroutine that writes them through a buffer, flushing whenever the
// queue runs empty so lines reach the file promptly under light load and
// in large writes under heavy load.
type logWriter struct {
	name  string
	out   io.Writer
	file  *os.File // closed by close; nil for stdout/stderr
	lines chan *[]byte
	done  chan struct{}
	once  sync.Once
	err   error
}

// destination names the writer a log uses; the stream loggers and the
// file logger on /dev/stdout share one, so their lines never interleave
// mid-line.
func destination(cfg *state.AccessLog) string {
	switch cfg.Sink {
	case state.AccessLogStdout:
		return "/dev/stdout"
	case state.AccessLogStderr:
		return "/dev/stderr"
	}
	return cfg.Path
}

// writerLocked returns the writer for cfg's destination, opening it on
// first use. a.mu is held.
func (a *AccessLogger) writerLocked(cfg *state.AccessLog) *logWriter {
	dest := destination(cfg)
	if w := a.writers[dest]; w != nil {
		return w
	}
	w := &logWriter{name: dest, lines: make(chan *[]byte, a.queue), done: make(chan struct{})}
	switch dest {
	case "/dev/stdout":
		w.out = os.Stdout
	case "/dev/stderr":
		w.out = os.Stderr
	default:
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			a.log.Error("access log: open", "name", cfg.Name, "path", dest, "err", err)
			return nil
		}
		w.out, w.file = f, f
	}
	a.writers[dest] = w
	go w.run(a)
	return w
}

// enqueue hands a line to the writer; false when the queue is full.
func (w *logWriter) enqueue(b *[]byte) (ok bool) {
	select {
	case w.lines <- b:
		return true
	default:
		return false
	}
}

func (w *logWriter) run(a *AccessLogger) {
	defer close(w.done)
	bw := bufio.NewWriterSize(w.out, 64<<10)
	reported := false
	write := func(b *[]byte) {
		if _, err := bw.Write(*b); err != nil {
			a.failed.Add(1)
			if !reported {
				reported = true
				a.log.Error("access log: write", "path", w.name, "err", err)
			}
		}
		putBuf(b)
	}
	// A nil line is close's stop sign. The channel itself is never closed,
	// so a record racing with Close cannot panic on a send: its line sits
	// in the abandoned queue or is dropped.
	for b := <-w.lines; b != nil; b = <-w.lines {
		write(b)
		// Write what is already queued before paying for a flush.
		stop := false
	drain:
		for {
			select {
			case b := <-w.lines:
				if b == nil {
					stop = true
					break drain
				}
				write(b)
			default:
				break drain
			}
		}
		if err := bw.Flush(); err != nil && !reported {
			reported = true
			a.log.Error("access log: write", "path", w.name, "err", err)
		}
		if stop {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		w.err = fmt.Errorf("access log %s: %w", w.name, err)
	}
}

// close writes the lines queued before it and closes the file.
func (w *logWriter) close() error {
	w.once.Do(func() {
		w.lines <- nil
		<-w.done
		if w.file != nil {
			if err := w.file.Close(); err != nil && w.err == nil {
				w.err = fmt.Errorf("access log %s: %w", w.name, err)
			}
		}
	})
	return w.err
}
