package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/dns"
	"github.com/meshlet/meshlet/xds"
)

// dnsOptions are run's --dns-* flags: the DNS proxy captured DNS is sent to.
type dnsOptions struct {
	addr       string
	resolvConf string
	domain     string
	timeout    time.Duration
	nds        bool
}

func (o *dnsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "dns-proxy", "", `serve DNS (UDP and TCP) on these comma-separated addresses, e.g. 127.0.0.1:15053,[::1]:15053; default off, `+dns.DefaultAddr+` and `+defaultAddrV6+` with --capture-dns`)
	fs.StringVar(&o.resolvConf, "dns-resolv-conf", dns.DefaultResolvConf, "resolv.conf whose nameservers receive the names the DNS proxy does not know, and whose search domains it recognises")
	fs.StringVar(&o.domain, "dns-cluster-domain", "", "Kubernetes cluster domain; default: from the node ID (NS.svc.DOMAIN), else "+dns.DefaultDomain)
	fs.DurationVar(&o.timeout, "dns-upstream-timeout", dns.DefaultUpstreamTimeout, "how long to wait for one upstream DNS server before trying the next")
	fs.BoolVar(&o.nds, "dns-nds", true, "subscribe to Istio's NameTable (NDS) over a second ADS stream; without it, names come from xDS listeners bound to service VIPs")
}

// defaultAddrV6 is where ip6tables/nftables REDIRECT sends captured IPv6
// DNS (the IPv6 loopback, port 15053).
const defaultAddrV6 = "[::1]:15053"

// dnsRuntime is a running DNS proxy; nil-safe stop.
type dnsRuntime struct {
	srv *dns.Server
	// table takes node-mode services too: table.SetServices.
	table  *dns.Table
	cancel context.CancelFunc
	done   chan struct{}
}

// startDNS starts the DNS proxy if asked for (or implied by --capture-dns),
// fed from p's store and, with ADS, from NDS. It must run before capture is
// installed so that redirected queries find it listening.
func startDNS(o *dnsOptions, captureDNS bool, p *proxy, cfg *proxyConfig, getenv func(string) string, log *slog.Logger) (*dnsRuntime, error) {
	addr := o.addr
	defaulted := addr == "" && captureDNS
	if defaulted {
		// ip6tables REDIRECT sends IPv6 queries to ::1: serve both.
		addr = dns.DefaultAddr + "," + defaultAddrV6
	}
	if addr == "" {
		return nil, nil
	}
	rc, err := dns.ReadResolvConf(o.resolvConf)
	if err != nil {
		return nil, fmt.Errorf("--dns-resolv-conf: %w", err)
	}
	ns, domain := proxyNamespace(cfg.Node, getenv)
	if o.domain != "" {
		domain = o.domain
	}
	table := dns.NewTable(dns.TableConfig{Namespace: ns, Domain: domain, Search: rc.Search})
	table.WatchStore(p.store)
	metrics := &dns.Metrics{}
	p.addCollector(metrics)
	var addrs []string
	for a := range strings.SplitSeq(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	dcfg := dns.Config{
		Addrs: addrs, Table: table, Upstreams: rc.Servers, UpstreamTimeout: o.timeout,
		Mark: dns.DefaultMark, Metrics: metrics, Log: log,
	}
	srv, err := dns.Listen(dcfg)
	if err != nil && defaulted {
		// No IPv6 on this host (or in this netns): IPv4 alone then.
		log.Info("dns proxy: IPv6 loopback unavailable; serving IPv4 only", "err", err)
		dcfg.Addrs = []string{dns.DefaultAddr}
		srv, err = dns.Listen(dcfg)
	}
	if err != nil {
		return nil, err
	}
	rt := &dnsRuntime{srv: srv, table: table, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	if o.nds && cfg.ADSAddress != "" {
		node := dnsNode(cfg.Node)
		go func() {
			defer close(rt.done)
			if err := dns.RunNDS(ctx, dns.NDSConfig{Address: cfg.ADSAddress, Node: node, Table: table, Log: log}); err != nil {
				log.Error("NDS stopped", "err", err)
			}
		}()
	} else {
		close(rt.done)
	}
	log.Info("dns proxy listening", "addrs", fmt.Sprint(srv.Addrs()), "upstreams", rc.Servers,
		"search", rc.Search, "namespace", ns, "domain", domain, "nds", o.nds && cfg.ADSAddress != "")
	return rt, nil
}

func (rt *dnsRuntime) stop() {
	if rt == nil {
		return
	}
	rt.cancel()
	<-rt.done
	_ = rt.srv.Close()
}

// proxyNamespace is the proxy's namespace and cluster domain: POD_NAMESPACE
// (or metadata NAMESPACE) and the node ID's "NS.svc.DOMAIN" part, as
// Istio's agent derives them.
func proxyNamespace(n xds.Node, getenv func(string) string) (ns, domain string) {
	ns = getenv("POD_NAMESPACE")
	if ns == "" {
		ns = n.Metadata["NAMESPACE"]
	}
	domain = dns.DefaultDomain
	parts := strings.Split(n.ID, "~")
	if len(parts) == 4 {
		idNS, rest, ok := strings.Cut(parts[3], ".svc.")
		if ok && rest != "" {
			domain = rest
		}
		if ns == "" && ok {
			ns = idNS
		}
	}
	return ns, domain
}

// dnsNode is the node for the NDS stream: the proxy's own, with the
// metadata that makes istiod send a NameTable.
func dnsNode(n xds.Node) *core.Node {
	fields := map[string]*structpb.Value{}
	for k, v := range n.Metadata {
		fields[k] = structpb.NewStringValue(v)
	}
	fields["DNS_CAPTURE"] = structpb.NewStringValue("true")
	return &core.Node{Id: n.ID, Cluster: n.Cluster, UserAgentName: "meshlet", Metadata: &structpb.Struct{Fields: fields}}
}

// addCollector exposes c on the metrics endpoint, if metrics are on.
func (p *proxy) addCollector(c prometheus.Collector) {
	if p.telemetry != nil {
		p.telemetry.AddCollector(c)
	}
}
