package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
)

// OpsDeps are the operational endpoints' hooks; each nil func disables its
// endpoint (it answers 501), so embedders choose what they expose.
type OpsDeps struct {
	// ConfigDump returns /config_dump as Envoy-shaped JSON
	// (envoy.admin.v3.ConfigDump, secrets redacted). When nil the state
	// snapshot dump is served instead.
	ConfigDump func() ([]byte, error)
	// Stats returns counters for /stats as name -> value.
	Stats func() map[string]uint64
	// LogLevel is changed by /logging?level=.
	LogLevel *slog.LevelVar
	// DrainListeners stops every listener accepting and lets open
	// connections finish; it must return without waiting for them.
	DrainListeners func()
	// Quit starts an orderly shutdown (/quitquitquit); it must not wait
	// for it, since the admin server is among what it stops.
	Quit func()
	// Certs describes the certificates in use for /certs (JSON-encodable).
	Certs func() any
	// ReopenLogs reopens the access log files by name (/reopen_logs, for
	// log rotation); it returns when they are reopened.
	ReopenLogs func()
}

func (s *Server) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("POST /logging", s.logging)
	mux.HandleFunc("GET /logging", s.logging)
	mux.HandleFunc("POST /drain_listeners", s.drainListeners)
	mux.HandleFunc("POST /quitquitquit", s.quit)
	mux.HandleFunc("GET /certs", s.certs)
	mux.HandleFunc("POST /reopen_logs", s.reopenLogs)
}

// reopenLogs is Envoy's POST /reopen_logs: after logrotate renamed the
// access logs, the proxy continues in new files at the configured paths.
func (s *Server) reopenLogs(w http.ResponseWriter, _ *http.Request) {
	if s.deps.ReopenLogs == nil {
		notWired(w, "/reopen_logs")
		return
	}
	s.deps.ReopenLogs()
	fmt.Fprintln(w, "OK")
}

func notWired(w http.ResponseWriter, what string) {
	http.Error(w, what+" is not available in this process", http.StatusNotImplemented)
}

// stats prints "name: value" lines sorted by name, Envoy's text format;
// ?filter=substring narrows them.
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	if s.deps.Stats == nil {
		notWired(w, "/stats")
		return
	}
	m := s.deps.Stats()
	names := make([]string, 0, len(m))
	filter := r.URL.Query().Get("filter")
	for n := range m {
		if filter == "" || strings.Contains(n, filter) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, n := range names {
		fmt.Fprintf(w, "%s: %d\n", n, m[n])
	}
}

// logging shows the level, or sets it with ?level=debug|info|warn|error
// (Envoy's trace and critical map to debug and error). Changing it takes
// POST, as in Envoy, so a crawler cannot turn on debug logging.
func (s *Server) logging(w http.ResponseWriter, r *http.Request) {
	lv := s.deps.LogLevel
	if lv == nil {
		notWired(w, "/logging")
		return
	}
	if q := r.URL.Query().Get("level"); q != "" {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST to change the level", http.StatusMethodNotAllowed)
			return
		}
		var l slog.Level
		switch strings.ToLower(q) {
		case "trace", "debug":
			l = slog.LevelDebug
		case "info":
			l = slog.LevelInfo
		case "warn", "warning":
			l = slog.LevelWarn
		case "error", "critical":
			l = slog.LevelError
		case "off":
			l = slog.LevelError + 100
		default:
			http.Error(w, fmt.Sprintf("unknown level %q (trace, debug, info, warn, error, critical, off)", q), http.StatusBadRequest)
			return
		}
		lv.Set(l)
		s.deps.Log.Info("log level changed", "level", l.String())
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "active loggers:\n  meshlet: %s\n", strings.ToLower(lv.Level().String()))
}

func (s *Server) drainListeners(w http.ResponseWriter, _ *http.Request) {
	if s.deps.DrainListeners == nil {
		notWired(w, "/drain_listeners")
		return
	}
	s.deps.DrainListeners()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "OK\n")
}

func (s *Server) quit(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Quit == nil {
		notWired(w, "/quitquitquit")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "OK\n")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.quitOnce.Do(s.deps.Quit)
}

func (s *Server) certs(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Certs == nil {
		notWired(w, "/certs")
		return
	}
	writeJSON(w, s.deps.Certs())
}
