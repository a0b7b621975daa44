package capture

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// open returns an fd for the namespace and a func releasing it; the fd is -1
// for the host.
func (s Scope) open() (fd int, release func(), err error) {
	if s.netnsFd >= 0 {
		return s.netnsFd, func() {}, nil
	}
	if s.netnsPath == "" {
		return -1, func() {}, nil
	}
	f, err := os.Open(s.netnsPath)
	if err != nil {
		return -1, nil, fmt.Errorf("capture: %w", err)
	}
	return int(f.Fd()), func() { f.Close() }, nil
}

// Do runs fn on an OS thread inside the scope's network namespace. Sockets
// fn opens and commands it starts (os/exec forks from the calling thread)
// live there. The thread is not returned to the scheduler afterwards: it
// exits with its goroutine, so no other goroutine ever runs in the wrong
// namespace.
func (s Scope) Do(fn func() error) error {
	if s.IsHost() {
		return fn()
	}
	fd, release, err := s.open()
	if err != nil {
		return err
	}
	defer release()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("capture: setns %v: %w", s, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
