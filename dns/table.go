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
	// Namespace is the proxy's own namespace (POD_NAMESPACE): its services
	// also answer to their bare name.
	Namespace string
	// Domain is the cluster domain; "" means DefaultDomain.
	Domain string
	// Search are the client's resolv.conf search domains: a table name
	// with one of them appended is a resolver's search expansion and gets
	// NXDOMAIN without asking upstream.
	Search []string
}

// Table is the mesh name table. Sources are set with SetNDS, SetXDS and
// SetServices from any goroutine; each rebuilds the lookup index (off the
// query path) and publishes it atomically. Lookup never blocks.
type Table struct {
	cfg TableConfig

	mu       sync.Mutex // serializes source updates and rebuilds
	nds      []Host
	ndsSet   bool // NDS arrived at least once: it replaces the xDS-derived names
	fromXDS  []Host
	services []Host

	cur atomic.Pointer[index]
}

// index is one immutable lookup view.
type index struct {
	exact    map[string]*answer
	wildcard map[string]*answer // suffix after "*.", e.g. "example.com"
	search   []string           // ".ns.svc.cluster.local", lower-case
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

// SetServices replaces the node-mode services (the Workload API's Service
// hostnames and VIPs). They are used whatever the other sources say.
func (t *Table) SetServices(hosts []Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.services = hosts
	t.cur.Store(t.build())
}

// Len is the number of exact names the table answers (all forms).
func (t *Table) Len() int { return len(t.cur.Load().exact) }

// build indexes the current sources; t.mu is held (or t is not yet shared).
func (t *Table) build() *index {
	ix := &index{exact: map[string]*answer{}, wildcard: map[string]*answer{}}
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
	}
	sources := [][]Host{t.services, t.nds}
	if !t.ndsSet {
		sources[1] = t.fromXDS
	}
	for _, hosts := range sources {
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
			for _, n := range nameForms(name, svc, ns, t.cfg.Namespace) {
				add(ix.exact, n, h.Addrs)
			}
		}
	}
	// A name with no usable address of either family answers nothing.
	for k, a := range ix.exact {
		if len(a.v4)+len(a.v6) == 0 {
			delete(ix.exact, k)
		}
	}
	return ix
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

// lookup resolves name (any case, trailing dot or not).
func (ix *index) lookup(name string) (*answer, verdict) {
	name = canonical(name)
	if a, ok := ix.exact[name]; ok {
		return a, found
	}
	// Wildcards: "*.example.com" covers "a.example.com" and
	// "a.b.example.com", the longest suffix winning.
	if len(ix.wildcard) > 0 {
		for rest := name; ; {
			_, after, ok := strings.Cut(rest, ".")
			if !ok {
				break
			}
			if a, ok := ix.wildcard[after]; ok {
				return a, found
			}
			rest = after
		}
	}
	for _, s := range ix.search {
		if base, ok := strings.CutSuffix(name, s); ok {
			if _, ok := ix.exact[base]; ok {
				return nil, nxdomain
			}
		}
	}
	return nil, unknown
}
