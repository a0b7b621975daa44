package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/whitebox"
)

// The launcher is krun's job for plain containers: `ztunnel run [flags] --
// APP ARGS` sets up capture (sidecar) or HTTP_PROXY (whitebox) for an
// application, starts the proxy, waits until it is ready, and only then
// starts the application; signals go to the application, and when it exits
// the proxy drains, capture is removed and its exit code becomes ours.

// Launch modes (--mode). Other values (node mode) belong to other parts of
// run; the launcher only reads the flag.
const (
	modeSidecar  = "sidecar"
	modeWhitebox = "whitebox"
)

// defaultReadyTimeout bounds the wait for xDS and certificates before the
// application would start.
const defaultReadyTimeout = 60 * time.Second

// launchOptions are run's launcher flags, and the application after "--".
type launchOptions struct {
	mode         flag.Value // --mode, possibly registered by someone else
	readyTimeout time.Duration
	proxyMark    uint32
	statusAddr   string
	app          []string
	done         chan struct{} // closed when the app has exited (launch_run.go)
}

// modeValue is --mode when the launcher registers it.
type modeValue struct{ s string }

func (m *modeValue) String() string     { return m.s }
func (m *modeValue) Set(s string) error { m.s = s; return nil }

func (o *launchOptions) register(fs *flag.FlagSet) {
	// --mode is shared with node mode; whoever registers it first owns the
	// flag and the others read its value.
	if f := fs.Lookup("mode"); f != nil {
		o.mode = f.Value
	} else {
		mv := &modeValue{}
		fs.Var(mv, "mode", `with "-- APP ARGS": "sidecar" captures the app's traffic in this network namespace (--capture defaults to iptables; needs root), "whitebox" points its HTTP_PROXY/HTTPS_PROXY at the whitebox proxy (no root); "" sets up neither`)
		o.mode = mv
	}
	fs.DurationVar(&o.readyTimeout, "ready-timeout", defaultReadyTimeout, `with "-- APP ARGS": how long to wait for the proxy to be ready (xDS synced, certificates present) before giving up without starting the app`)
	fs.StringVar(&o.statusAddr, "status", "", `serve GET /healthz/ready (Kubernetes probes) on this address, e.g. `+defaultStatusAddress+`; "" disables it (the admin API is loopback only)`)
	o.proxyMark = capture.DefaultProxyMark
	fs.Func("proxy-mark", fmt.Sprintf("SO_MARK on every socket the proxy dials (upstreams, passthrough, xDS), which capture never redirects; 0 disables it (default %#x)", capture.DefaultProxyMark), func(s string) error {
		v, err := strconv.ParseUint(s, 0, 32)
		if err != nil {
			return fmt.Errorf("want a number such as 0x539: %w", err)
		}
		o.proxyMark = uint32(v)
		return nil
	})
}

// modeName is --mode's value.
func (o *launchOptions) modeName() string {
	if o.mode == nil {
		return ""
	}
	return o.mode.String()
}

// takeApp records the application: the arguments left after flag parsing,
// which must have followed "--" (anything else is a mistake such as a
// misspelt flag value).
func (o *launchOptions) takeApp(args, rest []string) error {
	if len(rest) == 0 {
		if len(args) > 0 && args[len(args)-1] == "--" {
			return errors.New(`"--" must be followed by the application to run`)
		}
		return nil
	}
	if i := len(args) - len(rest) - 1; i < 0 || args[i] != "--" {
		return fmt.Errorf("unexpected arguments %q (put the application to launch after --)", rest)
	}
	o.app = slices.Clone(rest)
	return nil
}

// launching reports whether run starts an application.
func (o *launchOptions) launching() bool { return len(o.app) > 0 }

// prepare applies the mode's defaults to the capture and whitebox flags
// and the mark and inbound transparency to cfg. It runs before the proxy
// starts.
func (o *launchOptions) prepare(cfg *proxyConfig, co *captureOptions, wbo *whiteboxOptions) error {
	cfg.ProxyMark = o.proxyMark
	if co.inbound == "tproxy" && co.backend != "" && co.backend != capture.BackendNone {
		cfg.Transparent = transparentInbound(capture.DefaultInboundPort)
	}
	mode := o.modeName()
	if _, own := o.mode.(*modeValue); own && mode != "" && mode != modeSidecar && mode != modeWhitebox {
		return fmt.Errorf("--mode %q: want sidecar or whitebox", mode)
	}
	if !o.launching() {
		if mode == modeSidecar || mode == modeWhitebox {
			return fmt.Errorf("--mode %s launches an application: add -- APP ARGS", mode)
		}
		return nil
	}
	switch mode {
	case "":
	case modeSidecar:
		if co.backend == "" || co.backend == capture.BackendNone {
			co.backend = capture.BackendIPTables
		}
		if co.netns != "" {
			return errors.New("--mode sidecar captures the launcher's own network namespace; drop --capture-netns")
		}
		// The app runs with the launcher's credentials: if those are the
		// excluded ones, nothing it sends would reach the proxy.
		if os.Geteuid() == co.uid || os.Getegid() == co.gid {
			return fmt.Errorf("--mode sidecar: the launcher runs as uid %d gid %d, which capture excludes (--capture-uid %d, --capture-gid %d): the app would bypass the proxy",
				os.Geteuid(), os.Getegid(), co.uid, co.gid)
		}
		if o.proxyMark == 0 {
			return errors.New("--mode sidecar: --proxy-mark 0 would let the proxy's own connections be captured again; the launcher excludes the proxy by its mark")
		}
	case modeWhitebox:
		if co.backend != "" && co.backend != capture.BackendNone {
			return fmt.Errorf("--mode whitebox needs no capture; drop --capture %s", co.backend)
		}
		if wbo.Addr == "" {
			wbo.Addr = whitebox.DefaultAddr
		}
	default:
		return fmt.Errorf("--mode %q cannot launch an application: want sidecar or whitebox", mode)
	}
	if o.readyTimeout <= 0 {
		return errors.New("--ready-timeout must be positive")
	}
	return nil
}

// transparentInbound selects the inbound listener (the one bound to the
// capture's inbound port) for IP_TRANSPARENT: TPROXY delivers connections
// addressed to other hosts' addresses, which only a transparent socket
// accepts.
func transparentInbound(port uint16) func(*state.Listener) bool {
	return func(l *state.Listener) bool { return l.BindToPort && l.Address.Port() == port }
}

// appEnv is the application's environment: ours, plus the proxy variables
// in whitebox mode (both spellings, as curl reads only the lower-case
// http_proxy and Go reads either).
func appEnv(base []string, mode string, proxyAddr string) []string {
	env := slices.Clone(base)
	if mode != modeWhitebox || proxyAddr == "" {
		return env
	}
	u := "http://" + proxyAddr
	set := map[string]string{"HTTP_PROXY": u, "http_proxy": u, "HTTPS_PROXY": u, "https_proxy": u}
	env = slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, ok := set[k]
		return ok
	})
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"} {
		env = append(env, k+"="+set[k])
	}
	return env
}
