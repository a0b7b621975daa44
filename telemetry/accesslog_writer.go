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
	// reopened acknowledges each reopen marker the writer handled.
	reopened chan struct{}
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
	w := &logWriter{name: dest, lines: make(chan *[]byte, a.queue), done: make(chan struct{}), reopened: make(chan struct{}, 1)}
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
	// in the abandoned queue or is dropped. reopenLine asks for the file
	// to be reopened by name at that point of the stream.
	for b := <-w.lines; b != nil; b = <-w.lines {
		stop := false
		if b == reopenLine {
			w.reopenFile(a, bw)
		} else {
			write(b)
		}
		// Write what is already queued before paying for a flush.
	drain:
		for {
			select {
			case b := <-w.lines:
				switch b {
				case nil:
					stop = true
					break drain
				case reopenLine:
					w.reopenFile(a, bw)
				default:
					write(b)
				}
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

// reopenLine is the queue marker for a reopen (Envoy's /reopen_logs): the
// writer flushes what came before to the old file, then opens the path
// again, so a log rotated away (renamed) continues in a new file with no
// line lost or split.
var reopenLine = new([]byte)

// reopenFile runs on the writer goroutine. On failure the old file stays in
// use: losing lines is worse than writing them to the renamed file.
func (w *logWriter) reopenFile(a *AccessLogger, bw *bufio.Writer) {
	defer func() { w.reopened <- struct{}{} }()
	if w.file == nil {
		return
	}
	if err := bw.Flush(); err != nil {
		a.log.Error("access log: write", "path", w.name, "err", err)
	}
	f, err := os.OpenFile(w.name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		a.log.Error("access log: reopen", "path", w.name, "err", err)
		return
	}
	old := w.file
	w.out, w.file = f, f
	bw.Reset(f)
	if err := old.Close(); err != nil {
		a.log.Warn("access log: closing the rotated file", "path", w.name, "err", err)
	}
}

// Reopen reopens every file destination by name, after the lines queued
// before the call (Envoy's admin /reopen_logs, for log rotation). It
// returns once every writer has tried; a failure is logged and the writer
// keeps its old file.
func (a *AccessLogger) Reopen() {
	a.reopenMu.Lock()
	defer a.reopenMu.Unlock()
	a.mu.Lock()
	ws := make([]*logWriter, 0, len(a.writers))
	for _, w := range a.writers {
		if w.name != "/dev/stdout" && w.name != "/dev/stderr" {
			ws = append(ws, w)
		}
	}
	a.mu.Unlock()
	for _, w := range ws {
		// Blocking: unlike a line, the marker must not be dropped when
		// the queue is full.
		select {
		case w.lines <- reopenLine:
		case <-w.done:
			continue
		}
		select {
		case <-w.reopened:
		case <-w.done:
		}
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
