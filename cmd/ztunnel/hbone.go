package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/internal/wiring"
	"github.com/meshlet/meshlet/telemetry"
	"github.com/meshlet/meshlet/xds"
)

// hboneOptions are run's HBONE flags. With certificate files the proxy can
// tunnel clusters whose configuration asks for HBONE (state.Cluster.HBONE);
// with --hbone-inbound it also accepts tunnels and delivers them to the
// local workload.
type hboneOptions struct {
	Inbound                      string
	Allow                        string
	CertFile, KeyFile, RootsFile string
}

func (o *hboneOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.Inbound, "hbone-inbound", "", "accept HBONE tunnels on this address (e.g. :15008) and deliver them to the local workload")
	fs.StringVar(&o.Allow, "hbone-allow", "", "comma-separated destinations the HBONE inbound may deliver to: CIDR, IP (any port) or IP:PORT; default loopback only")
	fs.StringVar(&o.CertFile, "hbone-cert", "", "PEM certificate chain with this proxy's SPIFFE ID (HBONE in and out)")
	fs.StringVar(&o.KeyFile, "hbone-key", "", "PEM private key for --hbone-cert")
	fs.StringVar(&o.RootsFile, "hbone-roots", "", "PEM trust bundle for HBONE peers")
}

func (o *hboneOptions) enabled() bool {
	return o != nil && (o.Inbound != "" || o.CertFile != "" || o.KeyFile != "" || o.RootsFile != "")
}

// allowList decides which destinations the inbound may reach.
type allowList struct {
	prefixes []netip.Prefix
	exact    map[netip.AddrPort]bool
}

func parseAllowList(s string) (*allowList, error) {
	a := &allowList{exact: map[netip.AddrPort]bool{}}
	if strings.TrimSpace(s) == "" {
		a.prefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		return a, nil
	}
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if p, err := netip.ParsePrefix(e); err == nil {
			a.prefixes = append(a.prefixes, p.Masked())
		} else if ip, err := netip.ParseAddr(e); err == nil {
			a.prefixes = append(a.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
		} else if ap, err := netip.ParseAddrPort(e); err == nil {
			a.exact[ap] = true
		} else {
			return nil, fmt.Errorf("--hbone-allow: %q is not a CIDR, IP or IP:PORT", e)
		}
	}
	return a, nil
}

func (a *allowList) allows(t netip.AddrPort) bool {
	if a.exact[t] {
		return true
	}
	for _, p := range a.prefixes {
		if p.Contains(t.Addr()) {
			return true
		}
	}
	return false
}

// hboneRuntime is the running HBONE side of the proxy.
type hboneRuntime struct {
	src    *identity.FileSource // nil when the proxy's identity is used
	client *hbone.Client
	srv    *hbone.Server
	ln     net.Listener
	done   chan error
}

// startHBONE loads the identity, installs the outbound tunnel dialer and
// starts the inbound server when asked.
// Without --hbone-cert/-key/-roots it uses local, the proxy's own identity
// (--ca-dir, --ca-address or --cert-file).
func startHBONE(o *hboneOptions, clusters *upstream.Manager, local identity.Source, env hboneEnv, log *slog.Logger) (_ *hboneRuntime, err error) {
	if o == nil {
		o = &hboneOptions{}
	}
	files := o.CertFile != "" || o.KeyFile != "" || o.RootsFile != ""
	if (files || local == nil) && (o.CertFile == "" || o.KeyFile == "" || o.RootsFile == "") {
		return nil, errors.New("hbone: --hbone-cert, --hbone-key and --hbone-roots are all required (or give the proxy an identity with --ca-dir, --ca-address or --cert-file)")
	}
	allow, err := parseAllowList(o.Allow)
	if err != nil {
		return nil, err
	}
	h := &hboneRuntime{}
	src := local
	if files {
		fsrc, err := identity.NewFileSource(identity.FileOptions{CertFile: o.CertFile, KeyFile: o.KeyFile, RootsFile: o.RootsFile, Log: log})
		if err != nil {
			return nil, fmt.Errorf("hbone: %w", err)
		}
		h.src, src = fsrc, fsrc
	}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	self, err := ownID(src)
	if err != nil {
		return nil, err
	}
	h.client = &hbone.Client{Source: src, Log: log}
	// Store lets clusters in Istio's shape (internal listener +
	// tunneling_config) resolve per dial; their SDS "default"/"ROOTCA"
	// resolve to this identity.
	baggage := env.baggage()
	clusters.SetTunnel(&hbone.ClusterTunnel{Client: h.client, Src: self, Store: clusters.Identity().Store, Local: src,
		Meta: func(ctx context.Context) hbone.Meta {
			m := hbone.Meta{Baggage: baggage}
			if d, ok := upstream.DownstreamFrom(ctx); ok {
				m.ForwardedFor, m.TraceParent = d.Source, d.TraceParent
			}
			return m
		}})

	if o.Inbound == "" {
		return h, nil
	}
	h.ln, err = net.Listen("tcp", o.Inbound)
	if err != nil {
		return nil, fmt.Errorf("hbone: listen %s: %w", o.Inbound, err)
	}
	h.srv = &hbone.Server{
		Source: src,
		Log:    log,
		Dial: func(ctx context.Context, r *hbone.Request) (net.Conn, error) {
			if !allow.allows(r.Target) {
				return nil, fmt.Errorf("%w: %s", hbone.ErrTargetDenied, r.Target)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", r.Target.String())
		},
		StreamDone: env.streamDone(h.ln.Addr()),
	}
	h.done = make(chan error, 1)
	go func() { h.done <- h.srv.Serve(h.ln) }()
	log.Info("hbone inbound listening", "addr", h.ln.Addr().String(), "identity", self)
	return h, nil
}

// ownID is the SPIFFE ID of the source's current certificate.
func ownID(src identity.Source) (string, error) {
	id, err := wiring.OwnID(src)
	if err != nil {
		return "", fmt.Errorf("hbone: %w", err)
	}
	return id, nil
}

func (h *hboneRuntime) close() { h.stop((*hbone.Server).Close) }

// shutdown stops the HBONE side after draining the server: each
// connection gets GOAWAY and its open tunnels run until they end or ctx
// does (then they are cut, as by close).
func (h *hboneRuntime) shutdown(ctx context.Context) {
	h.stop(func(s *hbone.Server) error { return s.Shutdown(ctx) })
}

// stop ends the server with end, then releases the rest.
func (h *hboneRuntime) stop(end func(*hbone.Server) error) {
	if h == nil {
		return
	}
	if h.srv != nil {
		_ = end(h.srv)
		<-h.done
	} else if h.ln != nil {
		h.ln.Close()
	}
	if h.client != nil {
		h.client.Close()
	}
	if h.src != nil {
		h.src.Close()
	}
}

// hboneEnv is what the HBONE side takes from the rest of the proxy: the
// node metadata that describes this workload (baggage) and the sink that
// records tunneled connections (metrics, extra sinks).
type hboneEnv struct {
	Node xds.Node
	Sink telemetry.Sink
}

// baggage describes this workload as ztunnel does on every CONNECT, from
// the node metadata pilot-agent would send (ISTIO_META_*).
func (e hboneEnv) baggage() string {
	md := e.Node.Metadata
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := md[k]; v != "" {
				return v
			}
		}
		return ""
	}
	b := hbone.Baggage{
		ClusterID:    first("CLUSTER_ID"),
		Namespace:    first("NAMESPACE"),
		WorkloadName: first("WORKLOAD_NAME"),
		Service:      first("CANONICAL_SERVICE", "APP", "app"),
		Revision:     first("CANONICAL_REVISION", "VERSION", "version"),
	}
	if b.WorkloadName != "" {
		b.WorkloadType = "deployment"
	}
	return b.String()
}

// hboneInboundListener names HBONE inbound connections in telemetry.
const hboneInboundListener = "hbone_inbound"

// streamDone records each delivered tunnel as a tcp connection whose
// downstream is the original client (forwarded for= when the peer sent
// one) and whose principal is the tunnel peer.
func (e hboneEnv) streamDone(local net.Addr) func(*hbone.Request, hbone.StreamStats) {
	if e.Sink == nil {
		return nil
	}
	var localAP netip.AddrPort
	if ta, ok := local.(*net.TCPAddr); ok {
		localAP = ta.AddrPort()
	}
	opener, _ := e.Sink.(telemetry.TCPOpener)
	return func(r *hbone.Request, s hbone.StreamStats) {
		rec := &telemetry.TCPRecord{
			Conn: telemetry.Conn{
				Remote:        netip.AddrPortFrom(r.Source(), 0),
				Local:         localAP,
				PeerPrincipal: r.Peer.ID,
				TLS:           true,
				Listener:      hboneInboundListener,
			},
			Start:           s.Start,
			Duration:        s.Duration,
			UpstreamCluster: "inbound|" + strconv.Itoa(int(r.Target.Port())) + "||",
			UpstreamHost:    r.Target.String(),
			Connected:       true,
			BytesReceived:   s.Received,
			BytesSent:       s.Sent,
		}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && !r.Meta.ForwardedFor.IsValid() {
			rec.Remote = ap
		}
		if opener != nil {
			opener.TCPOpened(rec)
		}
		e.Sink.TCPDone(rec)
	}
}
