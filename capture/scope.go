package capture

import "fmt"

// Scope is where rules go: the host (the caller's own network namespace) or
// another network namespace named by a path (/var/run/netns/NAME,
// /proc/PID/ns/net) or an open file descriptor. The eBPF backend captures a
// cgroup v2 directory instead (Cgroup, WithCgroup); the netfilter backends
// ignore it.
type Scope struct {
	netnsPath string
	netnsFd   int    // -1: none
	cgroup    string // cgroup v2 directory; "": none
}

// Host is the calling process's network namespace.
func Host() Scope { return Scope{netnsFd: -1} }

// NetNSPath is the network namespace bind-mounted or linked at path.
func NetNSPath(path string) Scope { return Scope{netnsPath: path, netnsFd: -1} }

// NetNSFd is the network namespace open as fd; the caller keeps it open
// while the Redirector uses it.
func NetNSFd(fd int) Scope { return Scope{netnsFd: fd} }

// Cgroup is the host namespace with the processes of the cgroup v2
// directory path (e.g. /sys/fs/cgroup/kubepods/pod1) as the eBPF backend's
// scope.
func Cgroup(path string) Scope { return Scope{netnsFd: -1, cgroup: path} }

// WithCgroup returns s with the cgroup v2 directory path.
func (s Scope) WithCgroup(path string) Scope {
	s.cgroup = path
	return s
}

// CgroupPath is the scope's cgroup v2 directory, "" when it has none.
func (s Scope) CgroupPath() string { return s.cgroup }

// IsHost reports whether s is the caller's own namespace.
func (s Scope) IsHost() bool { return s.netnsPath == "" && s.netnsFd < 0 }

func (s Scope) String() string {
	if s.cgroup != "" {
		n := Scope{netnsPath: s.netnsPath, netnsFd: s.netnsFd}
		return "cgroup " + s.cgroup + " (" + n.String() + ")"
	}
	switch {
	case s.netnsPath != "":
		return "netns " + s.netnsPath
	case s.netnsFd >= 0:
		return fmt.Sprintf("netns fd %d", s.netnsFd)
	}
	return "host"
}
