package identity

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// FileOptions name the PEM files of a FileSource.
type FileOptions struct {
	// CertFile holds the certificate chain (leaf first), KeyFile its
	// private key, RootsFile the trust bundle (one or more CA
	// certificates). All three are required.
	CertFile, KeyFile, RootsFile string
	// Poll is how often the files' size and modification time are
	// checked; default 1s. Polling needs no inotify and works on every
	// volume type, including Kubernetes secret mounts (symlink swaps).
	Poll time.Duration
	Log  *slog.Logger
}

// FileSource is a Source read from files on disk and reloaded when they
// change, for certificates written by another agent (cert-manager,
// pilot-agent's output files, SPIRE's helper).
type FileSource struct {
	opts    FileOptions
	cur     atomic.Pointer[material]
	reloads atomic.Int64
	// stamps is what the files looked like at the last load attempt;
	// owned by the poll goroutine after New.
	stamps []fileStamp

	stop chan struct{}
	wg   sync.WaitGroup
}

type fileStamp struct {
	size  int64
	mtime time.Time
	err   bool
}

// NewFileSource loads the files once (an error if they are unusable) and
// polls them for changes until Close.
func NewFileSource(opts FileOptions) (*FileSource, error) {
	if opts.CertFile == "" || opts.KeyFile == "" || opts.RootsFile == "" {
		return nil, errors.New("file identity source: cert, key and roots files are all required")
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &FileSource{opts: opts, stop: make(chan struct{})}
	s.stamps = s.stat()
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.wg.Add(1)
	go s.poll()
	return s, nil
}

// Certificate returns the last successfully loaded certificate.
func (s *FileSource) Certificate() (*tls.Certificate, error) { return s.cur.Load().cert, nil }

// Roots returns the last successfully loaded trust bundle.
func (s *FileSource) Roots() (*x509.CertPool, error) { return s.cur.Load().roots, nil }

// Reloads counts successful reloads after the first load.
func (s *FileSource) Reloads() int64 { return s.reloads.Load() }

// Close stops polling.
func (s *FileSource) Close() {
	close(s.stop)
	s.wg.Wait()
}

func (s *FileSource) files() []string {
	return []string{s.opts.CertFile, s.opts.KeyFile, s.opts.RootsFile}
}

// stat follows symlinks, so an atomic symlink swap (how Kubernetes updates
// mounted secrets) shows up as a change.
func (s *FileSource) stat() []fileStamp {
	out := make([]fileStamp, 0, 3)
	for _, f := range s.files() {
		fi, err := os.Stat(f)
		if err != nil {
			out = append(out, fileStamp{err: true})
			continue
		}
		out = append(out, fileStamp{size: fi.Size(), mtime: fi.ModTime()})
	}
	return out
}

func (s *FileSource) load() (*material, error) {
	certPEM, err := os.ReadFile(s.opts.CertFile)
	if err != nil {
		return nil, fmt.Errorf("file identity source: %w", err)
	}
	keyPEM, err := os.ReadFile(s.opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("file identity source: %w", err)
	}
	rootsPEM, err := os.ReadFile(s.opts.RootsFile)
	if err != nil {
		return nil, fmt.Errorf("file identity source: %w", err)
	}
	m, err := parseMaterial(certPEM, keyPEM, rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("file identity source %s: %w", s.opts.CertFile, err)
	}
	return m, nil
}

// parseMaterial parses a PEM chain, key and bundle. A chain whose key does
// not match (a writer caught between files) is an error, so the caller
// keeps what it had.
func parseMaterial(certPEM, keyPEM, rootsPEM []byte) (*material, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		return nil, errors.New("trust bundle: no PEM certificates")
	}
	return &material{cert: &cert, roots: roots}, nil
}

func (s *FileSource) poll() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.Poll)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		st := s.stat()
		if stampsEqual(st, s.stamps) {
			continue
		}
		m, err := s.load()
		if err != nil {
			// Probably a writer between files: keep the stamps stale so
			// the next tick retries even if nothing else changes.
			s.opts.Log.Warn("certificate files changed but do not load; keeping the previous certificate", "error", err)
			continue
		}
		s.stamps = st
		if old := s.cur.Load(); bytes.Equal(old.cert.Certificate[0], m.cert.Certificate[0]) && old.roots.Equal(m.roots) {
			continue
		}
		s.cur.Store(m)
		s.reloads.Add(1)
		s.opts.Log.Info("certificate files reloaded", "cert", s.opts.CertFile, "not_after", m.cert.Leaf.NotAfter)
	}
}

func stampsEqual(a, b []fileStamp) bool {
	for i := range a {
		if a[i].size != b[i].size || !a[i].mtime.Equal(b[i].mtime) || a[i].err != b[i].err {
			return false
		}
	}
	return true
}
