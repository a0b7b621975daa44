package capture

import "fmt"

// Scope is where rules go: the host (the caller's own network namespace) or
// another network namespace named by a path (/var/run/netns/NAME,
// /proc/PID/ns/net) or an open file descriptor.
type Scope struct {
	netnsPath string
	netnsFd   int // -1: none
}

// Host is the calling process's network namespace.
func Host() Scope { return Scope{netnsFd: -1} }

// NetNSPath is the network namespace bind-mounted or linked at path.
func NetNSPath(path string) Scope { return Scope{netnsPath: path, netnsFd: -1} }

// NetNSFd is the network namespace open as fd; the caller keeps it open
// while the Redirector uses it.
func NetNSFd(fd int) Scope { return Scope{netnsFd: fd} }

// IsHost reports whether s is the caller's own namespace.
func (s Scope) IsHost() bool { return s.netnsPath == "" && s.netnsFd < 0 }

func (s Scope) String() string {
	switch {
	case s.netnsPath != "":
		return "netns " + s.netnsPath
	case s.netnsFd >= 0:
		return fmt.Sprintf("netns fd %d", s.netnsFd)
	}
	return "host"
}
