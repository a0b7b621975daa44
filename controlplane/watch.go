package controlplane

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// pollInterval is how often the directory is checked. Polling mtimes needs
// no new dependency (fsnotify) and is cheap for a handful of files.
const pollInterval = 250 * time.Millisecond

// fingerprint summarizes the directory's resource files: names, sizes and
// modification times. Any difference triggers a reload.
func fingerprint(dir string) string {
	files, err := resourceFiles(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(&b, "%s:gone;", f)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

func (s *Server) watch(ctx context.Context) {
	last := s.loadedFP
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fp := fingerprint(s.dir)
		if fp == last {
			continue
		}
		last = fp
		s.reload()
	}
}

// reload loads the directory again and publishes it; on error it logs and
// keeps serving the last good snapshot.
func (s *Server) reload() {
	res, err := loadDir(s.dir, s.vars)
	if err == nil {
		err = s.publish(res)
	}
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	if err != nil {
		s.log.Error("config reload failed; keeping the last good snapshot", "dir", s.dir, "err", err)
	}
}
