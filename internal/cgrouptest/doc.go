// Package cgrouptest gives privileged tests their own cgroup v2 and bpf
// filesystems: mounted under a temporary directory (ip netns exec remounts
// /sys, so /sys/fs/cgroup and /sys/fs/bpf are not reliable there), a child
// cgroup per test, and a way to start a process inside it. Everything is
// removed in t.Cleanup.
//
// It is for tests only and imports no meshlet package.
package cgrouptest
