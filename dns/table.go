package dns

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Host is one mesh hostname and the addresses it resolves to.
type Host struct {
	// Name is the FQDN, e.g. "reviews.bookinfo.svc.cluster.local" or a
	// ServiceEntry host; a leading "*." makes it a wildcard.
	Name string
	// Service and Namespace are the Kubernetes service name and namespace.
	// When empty they are derived from a Name of the form
	// "svc.ns.svc.<domain>"; hosts of another shape get no short forms.
	Service, Namespace string
	// NotKubernetes suppresses the short forms even for a Kubernetes-shaped
	// name (a ServiceEntry host that happens to look like one).
	NotKubernetes bool
	Addrs         []netip.Addr
}

// TableConfig is what shapes the names a Table answers.
type TableConfig struct {
	// Namespace is the proxy's own namespace (POD_NAMESPACE): a bare
	// service name from a client the server cannot place is looked up in
	// it (a placed client's bare names are its own namespace's).
	Namespace string
	// Domain is the cluster domain; "" means DefaultDomain.
	Domain string
	// Search are the client's resolv.conf search domains: a table name
	// with one of them appended is a resolver's search expansion and gets
	// NXDOMAIN without asking upstream.
	Search []string
	// Network is the proxy's network: a client the server cannot place
	// (ClientFunc) is answered the node-mode VIPs on it.
	Network string
}

// Table is the mesh name table. Sources are set with SetNDS, SetXDS and
// SetAmbient from any goroutine; each rebuilds the lookup index (off the
// query path) and publishes it atomically. Lookup never blocks.
type Table struct {
	cfg TableConfig

	mu      sync.Mutex // serializes source updates and rebuilds
	nds     []Host
	ndsSet  bool // NDS arrived at least once: it replaces the xDS-derived names
	fromXDS []Host
	ambient []AmbientService

	cur atomic.Pointer[index]
}

// index is one immutable lookup view.
type index struct {
	exact    map[string]*answer
	wildcard map[string]*answer // suffix after "*.", e.g. "example.com"
	// svcExact and svcWild are the node-mode names (same keys as exact
	// and wildcard): the services that answer to each, one picked per
	// query for the client.
	svcExact map[string][]*candidate
	svcWild  map[string][]*candidate
	search   []string // ".ns.svc.cluster.local", lower-case
	// namespace and network stand in for a client the server cannot place.
	namespace, network string
	domain             string // cluster domain: bare names expand under it
	names              int    // distinct exact names, all sources
}

// answer is what a table name resolves to.
type answer struct {
	v4, v6 []netip.Addr
}

// NewTable returns an empty table.
func NewTable(cfg TableConfig) *Table {
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	cfg.Domain = canonical(cfg.Domain)
	t := &Table{cfg: cfg}
	t.cur.Store(t.build())
	return t
}

// SetNDS replaces the hosts from Istio's NameTable. Once NDS has been set,
// it is authoritative and the names derived from xDS are no longer used.
func (t *Table) SetNDS(hosts []Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nds, t.ndsSet = hosts, true
	t.cur.Store(t.build())
}

// SetXDS replaces the hosts derived from the xDS snapshot (HostsFromSnapshot).
func (t *Table) SetXDS(hosts []Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fromXDS = hosts
	t.cur.Store(t.build())
}

// SetAmbient replaces the node-mode services (the Workload API's Service
// hostnames and VIPs). They are used whatever the other sources say, and a
// name they answer is answered from them alone.
func (t *Table) SetAmbient(svcs []AmbientService) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ambient = svcs
	t.cur.Store(t.build())
}

// Len is the number of exact names the table answers (all forms).
func (t *Table) Len() int { return t.cur.Load().names }

// build indexes the current sources; t.mu is held (or t is not yet shared).
func (t *Table) build() *index {
	ix := &index{
		exact: map[string]*answer{}, wildcard: map[string]*answer{},
		namespace: canonical(t.cfg.Namespace), network: t.cfg.Network,
		domain: t.cfg.Domain,
	}
	ix.svcExact, ix.svcWild = t.buildAmbient()
	for _, s := range t.cfg.Search {
		if s = canonical(s); s != "" {
			ix.search = append(ix.search, "."+s)
		}
	}
	add := func(m map[string]*answer, name string, addrs []netip.Addr) {
		a := m[name]
		if a == nil {
			a = &answer{}
			m[name] = a
		}
		for _, ip := range addrs {
			a.add(ip)
		}
	}
	hosts := t.nds
	if !t.ndsSet {
		hosts = t.fromXDS
	}
	for _, h := range hosts {
		name := canonical(h.Name)
		if name == "" || !slices.ContainsFunc(h.Addrs, netip.Addr.IsValid) {
			continue
		}
		if suffix, ok := strings.CutPrefix(name, "*."); ok {
			add(ix.wildcard, suffix, h.Addrs)
			continue
		}
		svc, ns := canonical(h.Service), canonical(h.Namespace)
		if svc == "" && ns == "" && !h.NotKubernetes {
			svc, ns, _ = kubeParts(name, t.cfg.Domain)
		}
		if h.NotKubernetes || !strings.HasSuffix(name, ".svc."+t.cfg.Domain) {
			// Like Istio: no short forms for hosts outside the
			// proxy's cluster domain, whose "svc.ns" could clash.
			svc, ns = "", ""
		}
		for _, n := range nameForms(name, svc, ns) {
			add(ix.exact, n, h.Addrs)
		}
	}
	// A name with no usable address of either family answers nothing.
	for k, a := range ix.exact {
		if len(a.v4)+len(a.v6) == 0 {
			delete(ix.exact, k)
		}
	}
	ix.names = len(ix.exact)
	for k := range ix.svcExact {
		if _, dup := ix.exact[k]; !dup {
			ix.names++
		}
	}
	return ix
}

// add appends ip to its family's list once; unusable addresses are
// skipped.
func (a *answer) add(ip netip.Addr) {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid() || ip.IsUnspecified():
	case ip.Is4():
		if !slices.Contains(a.v4, ip) {
			a.v4 = append(a.v4, ip)
		}
	default:
		if !slices.Contains(a.v6, ip) {
			a.v6 = append(a.v6, ip)
		}
	}
}

// verdict is what the table says about a name.
type verdict int

const (
	// unknown: not a mesh name; forward it.
	unknown verdict = iota
	// found: answer from the table (possibly with no record of the asked
	// family: NODATA).
	found
	// nxdomain: a search-domain expansion of a mesh name, which cannot
	// exist; answer NXDOMAIN without asking upstream.
	nxdomain
)

// find resolves name (any case, trailing dot or not) for the client at
// src; clients places it (nil, or a zero src: the client is unknown).
// Node-mode names come first, then the NameTable's (or xDS's), exact names
// before wildcards. A bare name that is no table name itself is then
// tried as a service of the asking pod's namespace, as ztunnel expands it.
func (ix *index) find(name string, src netip.Addr, clients ClientFunc) (*answer, verdict) {
	name = canonical(name)
	who := &asker{src: src, clients: clients}
	if a, ok := ix.match(name, who); ok {
		return a, found
	}
	if fqdn := ix.bareFQDN(name, who); fqdn != "" {
		if a, ok := ix.match(fqdn, who); ok {
			return a, found
		}
	}
	for _, s := range ix.search {
		if base, ok := strings.CutSuffix(name, s); ok && ix.has(base, who) {
			return nil, nxdomain
		}
	}
	return nil, unknown
}

// match answers name from the table's own names, without expansion.
func (ix *index) match(name string, who *asker) (*answer, bool) {
	if cs, ok := ix.svcExact[name]; ok {
		if a := ix.pick(cs, who); a != nil {
			return a, true
		}
	}
	if a, ok := ix.exact[name]; ok {
		return a, true
	}
	// Wildcards: "*.example.com" covers "a.example.com" and
	// "a.b.example.com", the longest suffix winning.
	if len(ix.wildcard)+len(ix.svcWild) > 0 {
		for rest := name; ; {
			_, after, ok := strings.Cut(rest, ".")
			if !ok {
				break
			}
			if cs, ok := ix.svcWild[after]; ok {
				if a := ix.pick(cs, who); a != nil {
					return a, true
				}
			}
			if a, ok := ix.wildcard[after]; ok {
				return a, true
			}
			rest = after
		}
	}
	return nil, false
}

// has reports whether base is a table name (exactly, or as a bare name of
// the asker's namespace): base plus a search domain is then a resolver's
// expansion of it.
func (ix *index) has(base string, who *asker) bool {
	_, inExact := ix.exact[base]
	_, inSvc := ix.svcExact[base]
	if inExact || inSvc {
		return true
	}
	if fqdn := ix.bareFQDN(base, who); fqdn != "" {
		_, inExact = ix.exact[fqdn]
		_, inSvc = ix.svcExact[fqdn]
	}
	return inExact || inSvc
}

// bareFQDN is the Kubernetes FQDN a one-label name stands for,
// "svc.<ns>.svc.<domain>" with the asking pod's namespace (the proxy's
// for a client it cannot place); "" for any other name.
func (ix *index) bareFQDN(name string, who *asker) string {
	if name == "" || strings.Contains(name, ".") {
		return ""
	}
	ns := ix.namespace
	if c, known := who.get(); known {
		ns = canonical(c.Namespace)
	}
	if ns == "" {
		return ""
	}
	return name + "." + ns + ".svc." + ix.domain
}

// asker places a query's client once, when an answer first depends on
// it: most queries are forwarded and never need it.
type asker struct {
	src     netip.Addr
	clients ClientFunc
	done    bool
	client  Client
	known   bool
}

func (w *asker) get() (Client, bool) {
	if !w.done {
		w.done = true
		if w.clients != nil && w.src.IsValid() {
			w.client, w.known = w.clients(w.src.Unmap())
		}
	}
	return w.client, w.known
}
