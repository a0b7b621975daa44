package main

import (
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	// fs holds --network, which the in-pod options register: node-mode
	// answers carry the VIPs on the asking pod's network, this proxy's.
	fs *flag.FlagSet
}

func (o *dnsOptions) register(fs *flag.FlagSet) {
	o.fs = fs
	fs.StringVar(&o.addr, "dns-proxy", "", `serve DNS (UDP and TCP) on these comma-separated addresses, e.g. 127.0.0.1:15053,[::1]:15053; default off, `+dns.DefaultAddr+` and `+defaultAddrV6+` with --capture-dns`)
	fs.StringVar(&o.resolvConf, "dns-resolv-conf", dns.DefaultResolvConf, "resolv.conf whose nameservers receive the names the DNS proxy does not know, and whose search domains it recognises")
	fs.StringVar(&o.domain, "dns-cluster-domain", "", "Kubernetes cluster domain; default: from the node ID (NS.svc.DOMAIN), else "+dns.DefaultDomain)
	fs.DurationVar(&o.timeout, "dns-upstream-timeout", dns.DefaultUpstreamTimeout, "how long to wait for one upstream DNS server before trying the next")
	fs.BoolVar(&o.nds, "dns-nds", true, "subscribe to Istio's NameTable (NDS) on the ADS stream (sets node metadata DNS_CAPTURE); without it, names come from xDS listeners bound to service VIPs")
}

// networkName is the proxy's network: --network, looked up after parsing
// whichever options registered it ("" without one).
func (o *dnsOptions) networkName() string {
	if o.fs == nil {
		return ""
	}
	if f := o.fs.Lookup("network"); f != nil {
		return f.Value.String()
	}
	return ""
}

// defaultAddrV6 is where ip6tables/nftables REDIRECT sends captured IPv6
// DNS (the IPv6 loopback, port 15053).
const defaultAddrV6 = "[::1]:15053"

// dnsRuntime is a running DNS proxy; nil-safe stop.
type dnsRuntime struct {
	srv *dns.Server
	// table takes node-mode services too (WatchStore).
	table *dns.Table
}

// The NameTable watcher is registered on the xDS client as an extra type.
var _ xds.ExtraWatcher = (*dns.NDSWatcher)(nil)

// enabled reports whether startDNS will serve DNS.
func (o *dnsOptions) enabled(captureDNS bool) bool { return o.addr != "" || captureDNS }

// wantsNDS reports whether the run subscribes to NDS: a DNS proxy, the
// flag, and an ADS connection to carry it.
func (o *dnsOptions) wantsNDS(captureDNS bool, cfg *proxyConfig) bool {
	return o.enabled(captureDNS) && o.nds && cfg.ADSAddress != ""
}

// markNode sets DNS_CAPTURE in the node metadata when NDS is wanted:
// istiod sends a NameTable only to such nodes, and the node goes out on
// the first request of the ADS stream, so this must run before startProxy.
func (o *dnsOptions) markNode(captureDNS bool, cfg *proxyConfig) {
	if !o.wantsNDS(captureDNS, cfg) {
		return
	}
	md := maps.Clone(cfg.Node.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	md["DNS_CAPTURE"] = "true"
	cfg.Node.Metadata = md
}

// startDNS starts the DNS proxy if asked for (or implied by --capture-dns),
// fed from p's store and, with ADS, from NDS subscribed on p's xDS client
// (the one ADS stream; markNode must have run). It must run before capture
// is installed so that redirected queries find it listening.
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
	network := o.networkName()
	table := dns.NewTable(dns.TableConfig{Namespace: ns, Domain: domain, Search: rc.Search, Network: network})
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
		// A query from a pod of this node picks node-mode services for
		// that pod (namespace, network).
		Clients: dns.StoreClients(p.store, network),
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
	rt := &dnsRuntime{srv: srv, table: table}
	nds := o.wantsNDS(captureDNS, cfg) && p.xds != nil
	if nds {
		w := &dns.NDSWatcher{Table: table, Log: log}
		if err := p.xds.Watch(xds.ExtraType{TypeURL: dns.TypeNameTable, Watcher: w}); err != nil {
			_ = srv.Close()
			return nil, fmt.Errorf("nds: %w", err)
		}
	}
	log.Info("dns proxy listening", "addrs", fmt.Sprint(srv.Addrs()), "upstreams", rc.Servers,
		"search", rc.Search, "namespace", ns, "domain", domain, "network", network, "nds", nds)
	return rt, nil
}

// stop closes the DNS sockets. The NDS subscription stays with the xDS
// client, which stops with the proxy.
func (rt *dnsRuntime) stop() {
	if rt == nil {
		return
	}
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

// addCollector exposes c on the metrics endpoint, if metrics are on.
func (p *proxy) addCollector(c prometheus.Collector) {
	if p.telemetry != nil {
		p.telemetry.AddCollector(c)
	}
}
