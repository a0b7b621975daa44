package telemetry

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/meshlet/meshlet/state"
)

// maxCompiled bounds the compiled-format cache. Every configuration push
// brings new *state.AccessLog values; past this many the cache is dropped
// and refilled from what is in use, which costs one compile per live log.
const maxCompiled = 4096

// AccessLogger is the Sink that writes the access_log entries of the HTTP
// connection manager or tcp_proxy carried in each record. Formats are
// compiled once per configuration value; lines are rendered into pooled
// buffers on the request goroutine and written by one goroutine per
// destination, so a slow disk never stalls a request: when a destination's
// queue is full the line is dropped and counted.
type AccessLogger struct {
	log   *slog.Logger
	queue int

	mu       sync.Mutex // guards compiled resets and writers
	compiled atomic.Pointer[sync.Map]
	nCompile atomic.Int64
	writers  map[string]*logWriter
	closed   bool
	reopenMu sync.Mutex // one Reopen at a time: acknowledgements are per writer

	written atomic.Uint64
	dropped atomic.Uint64
	failed  atomic.Uint64
}

// AccessLogOptions tune an AccessLogger.
type AccessLogOptions struct {
	// QueueLines is the per-destination queue length (default 4096).
	QueueLines int
	Log        *slog.Logger
}

// NewAccessLogger returns an AccessLogger; Close flushes and stops it.
func NewAccessLogger(opts AccessLogOptions) *AccessLogger {
	if opts.QueueLines <= 0 {
		opts.QueueLines = 4096
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	a := &AccessLogger{log: opts.Log, queue: opts.QueueLines, writers: map[string]*logWriter{}}
	a.compiled.Store(&sync.Map{})
	return a
}

// compiledLog is one state.AccessLog ready to render.
type compiledLog struct {
	cfg       *state.AccessLog
	text      format
	json      []jsonField
	omitEmpty bool
	w         *logWriter // nil when the destination could not be opened
}

// AccessLogStats are the logger's counters.
type AccessLogStats struct {
	// Written lines reached their writer's queue; Dropped found it full;
	// Failed had no usable destination (open or write error).
	Written, Dropped, Failed uint64
}

// Stats returns the counters.
func (a *AccessLogger) Stats() AccessLogStats {
	return AccessLogStats{Written: a.written.Load(), Dropped: a.dropped.Load(), Failed: a.failed.Load()}
}

// HTTPDone implements Sink.
func (a *AccessLogger) HTTPDone(r *HTTPRecord) {
	if r.HCM == nil || len(r.HCM.AccessLogs) == 0 {
		return
	}
	a.emit(r.HCM.AccessLogs, view{h: r})
}

// TCPDone implements Sink.
func (a *AccessLogger) TCPDone(r *TCPRecord) {
	if r.TCP == nil || len(r.TCP.AccessLogs) == 0 {
		return
	}
	a.emit(r.TCP.AccessLogs, view{t: r})
}

func (a *AccessLogger) emit(logs []*state.AccessLog, v view) {
	for _, cfg := range logs {
		if cfg.Filter != nil && !matchFilter(cfg.Filter, v) {
			continue
		}
		cl := a.get(cfg)
		if cl == nil || cl.w == nil {
			a.failed.Add(1)
			continue
		}
		buf := getBuf()
		if cl.json != nil {
			sc := getBuf()
			*buf, *sc = appendJSON(*buf, *sc, cl.json, v, cl.omitEmpty)
			putBuf(sc)
			*buf = append(*buf, '\n')
		} else {
			*buf = cl.text.appendText(*buf, v, cl.omitEmpty)
		}
		if cl.w.enqueue(buf) {
			a.written.Add(1)
		} else {
			putBuf(buf)
			a.dropped.Add(1)
		}
	}
}

// get returns the compiled form of cfg, compiling it on first use.
func (a *AccessLogger) get(cfg *state.AccessLog) *compiledLog {
	m := a.compiled.Load()
	if v, ok := m.Load(cfg); ok {
		return v.(*compiledLog)
	}
	return a.compile(cfg)
}

func (a *AccessLogger) compile(cfg *state.AccessLog) *compiledLog {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.compiled.Load()
	if v, ok := m.Load(cfg); ok {
		return v.(*compiledLog)
	}
	if a.closed {
		return nil
	}
	if a.nCompile.Add(1) > maxCompiled {
		m = &sync.Map{}
		a.compiled.Store(m)
		a.nCompile.Store(1)
	}
	cl, err := compileLog(cfg)
	if err != nil {
		// xds/resource validated the format; reaching this is a bug in one
		// of the two operator lists, reported once per configuration.
		a.log.Error("access log format", "name", cfg.Name, "err", err)
		cl = &compiledLog{cfg: cfg}
	} else {
		cl.w = a.writerLocked(cfg)
	}
	m.Store(cfg, cl)
	return cl
}

func compileLog(cfg *state.AccessLog) (*compiledLog, error) {
	cl := &compiledLog{cfg: cfg, omitEmpty: cfg.OmitEmptyValues}
	var err error
	switch {
	case cfg.JSON != nil:
		cl.json, err = compileJSON(cfg.JSON)
	case cfg.Text != "":
		cl.text, err = compileFormat(cfg.Text)
	default:
		cl.text, err = compileFormat(DefaultAccessLogFormat)
	}
	return cl, err
}

// Close flushes every destination and stops the writers. Records arriving
// afterwards are counted as failed.
func (a *AccessLogger) Close() error {
	a.mu.Lock()
	a.closed = true
	ws := a.writers
	a.writers = map[string]*logWriter{}
	a.compiled.Store(&sync.Map{})
	a.mu.Unlock()
	var first error
	for _, w := range ws {
		if err := w.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// matchFilter evaluates an access log filter against a record. TCP
// records have response code 0 and are never health checks.
func matchFilter(f *state.AccessLogFilter, v view) bool {
	switch f.Kind {
	case state.FilterStatusCode:
		code := uint64(0)
		if v.h != nil {
			code = uint64(max(v.h.ResponseCode, 0))
		}
		return compare(f.Op, code, f.Value)
	case state.FilterDuration:
		return compare(f.Op, uint64(max(v.duration().Milliseconds(), 0)), f.Value)
	case state.FilterNotHealthCheck:
		return v.h == nil || !v.h.HealthCheck
	case state.FilterRuntime:
		return sampled(f, v)
	case state.FilterAnd:
		for _, sub := range f.Filters {
			if !matchFilter(sub, v) {
				return false
			}
		}
		return true
	case state.FilterOr:
		for _, sub := range f.Filters {
			if matchFilter(sub, v) {
				return true
			}
		}
		return false
	}
	return false
}

func compare(op state.CompareOp, got, want uint64) bool {
	switch op {
	case state.CompareGE:
		return got >= want
	case state.CompareLE:
		return got <= want
	}
	return got == want
}

// sampled decides a runtime_filter. With an x-request-id the decision is
// a hash of it, so every proxy a request crosses logs it or none does;
// otherwise it is random.
func sampled(f *state.AccessLogFilter, v view) bool {
	den := uint64(f.Sampled.Denominator)
	if den == 0 {
		return false
	}
	var n uint64
	if v.h != nil && v.h.RequestID != "" && !f.IndependentRandomness {
		n = xxhash.Sum64String(v.h.RequestID) % den
	} else {
		n = rand.Uint64N(den)
	}
	return n < uint64(f.Sampled.Numerator)
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // let an outsized line's buffer go
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
