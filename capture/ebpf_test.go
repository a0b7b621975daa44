package capture

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	mebpf "github.com/meshlet/meshlet/ebpf"
)

// TestEBPFFallback: only a kernel lacking support sends the eBPF backend
// to iptables; a permission error is reported, not papered over.
func TestEBPFFallback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		probe    error
		iptables bool
		err      bool
	}{
		{"supported", nil, false, false},
		{"kernel lacks sockopt hooks", fmt.Errorf("ebpf: program type CGroupSockopt: %w", mebpf.ErrNotSupported), true, false},
		{"no permission", errors.New("ebpf: probe: operation not permitted"), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ebpfFallback(tc.probe)
			if got != tc.iptables || (err != nil) != tc.err {
				t.Errorf("ebpfFallback(%v) = %v, %v; want iptables=%v err=%v", tc.probe, got, err, tc.iptables, tc.err)
			}
		})
	}
}

func TestCheckEBPF(t *testing.T) {
	ok := Config{Inbound: InboundNone, DisableDNS: true}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"outbound only", ok, ""},
		{"outbound and inbound (sk_lookup)", Config{Inbound: InboundRedirect, DisableDNS: true}, ""},
		{"inbound only", Config{Inbound: InboundRedirect, DisableDNS: true, DisableOutbound: true}, ""},
		{"tproxy", Config{Inbound: InboundTProxy, DisableDNS: true}, "TPROXY"},
		{"dns", Config{Inbound: InboundNone}, "DNS"},
		{"nothing", Config{Inbound: InboundNone, DisableDNS: true, DisableOutbound: true}, "nothing to capture"},
	} {
		err := checkEBPF(tc.cfg)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: checkEBPF = %v, want error mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestPinDirFor(t *testing.T) {
	a := pinDirFor("/sys/fs/bpf/meshlet", "/sys/fs/cgroup/pod1")
	if a != pinDirFor("/sys/fs/bpf/meshlet", "/sys/fs/cgroup/pod1/") {
		t.Error("pin dir depends on a trailing slash")
	}
	if a == pinDirFor("/sys/fs/bpf/meshlet", "/sys/fs/cgroup/pod2") {
		t.Error("two cgroups share a pin dir")
	}
	if !strings.HasPrefix(a, "/sys/fs/bpf/meshlet/cg-") {
		t.Errorf("pin dir %s not under the base", a)
	}
}

func TestEBPFScope(t *testing.T) {
	s := Cgroup("/sys/fs/cgroup/pod1")
	if s.CgroupPath() != "/sys/fs/cgroup/pod1" || !s.IsHost() {
		t.Errorf("Cgroup scope: path %q host %v", s.CgroupPath(), s.IsHost())
	}
	n := NetNSPath("/var/run/netns/p").WithCgroup("/cg")
	if n.IsHost() || n.CgroupPath() != "/cg" || !strings.Contains(n.String(), "/var/run/netns/p") {
		t.Errorf("netns scope with cgroup: %v", n)
	}
	if _, err := New(BackendEBPF, Config{Inbound: InboundTProxy, DisableDNS: true}); err == nil {
		t.Error("New(ebpf) with TPROXY inbound: no error")
	}
	if pinKey(Cgroup("/cg")) != "/cg" || pinKey(NetNSPath("/var/run/netns/a")) == pinKey(NetNSPath("/var/run/netns/b")) {
		t.Error("pin keys: a cgroup's is not its path, or two namespaces share one")
	}
}
