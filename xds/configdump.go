package xds

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/cncf/xds/go/udpa/annotations"
	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshlet/meshlet/state"
)

// rawResource is the accepted protobuf of one resource, kept for
// /config_dump: the decoded state types drop what meshlet does not use,
// and an operator comparing with Envoy wants what the server sent.
type rawResource struct {
	raw         *anypb.Any
	version     string
	lastUpdated time.Time
	// value is the decoded value the raw belongs to; commit matches on it
	// so a resource from a rejected response never shows as accepted.
	value any
}

// rawStore holds the raw form of accepted resources. decodeOne fills
// pending from the Run goroutine; commit moves matching entries to
// accepted, which admin reads from other goroutines under mu.
type rawStore struct {
	pending map[string]map[string]rawResource // Run goroutine only

	mu       sync.Mutex
	accepted map[string]map[string]rawResource
}

// sameAsAccepted returns the decoded value of the accepted resource of
// this type and name when its raw bytes equal raw's, else nil.
func (c *Client) sameAsAccepted(typeURL, name string, raw *anypb.Any) any {
	c.raw.mu.Lock()
	defer c.raw.mu.Unlock()
	r, ok := c.raw.accepted[typeURL][name]
	if !ok || r.raw == nil || !bytes.Equal(r.raw.GetValue(), raw.GetValue()) {
		return nil
	}
	return r.value
}

// noteDecoded remembers raw as the source of value until commit.
func (c *Client) noteDecoded(typeURL, name string, raw *anypb.Any, value any) {
	if c.raw.pending == nil {
		c.raw.pending = map[string]map[string]rawResource{}
	}
	m := c.raw.pending[typeURL]
	if m == nil {
		m = map[string]rawResource{}
		c.raw.pending[typeURL] = m
	}
	m[name] = rawResource{raw: raw, value: value}
}

// publishRaw makes the accepted raw resources of typeURL match ts.values.
func (c *Client) publishRaw(ts *typeState) {
	pending := c.raw.pending[ts.url]
	delete(c.raw.pending, ts.url)
	now := time.Now()
	c.raw.mu.Lock()
	defer c.raw.mu.Unlock()
	if c.raw.accepted == nil {
		c.raw.accepted = map[string]map[string]rawResource{}
	}
	old := c.raw.accepted[ts.url]
	next := make(map[string]rawResource, len(ts.values))
	for name, v := range ts.values {
		version := ts.versions[name]
		if version == "" {
			version = ts.version
		}
		if p, ok := pending[name]; ok && p.value == v {
			p.version, p.lastUpdated = version, now
			next[name] = p
		} else if o, ok := old[name]; ok && o.value == v {
			next[name] = o
		}
	}
	c.raw.accepted[ts.url] = next
}

// ConfigDump returns the accepted xDS resources in the shape of Envoy's
// /config_dump (envoy.admin.v3.ConfigDump): listeners, clusters, routes,
// endpoints and secrets, each resource as the control plane sent it with
// every field marked sensitive (private keys, passwords) replaced by
// "[redacted]". Static resources from the bootstrap are not included.
func (c *Client) ConfigDump() *adminv3.ConfigDump {
	c.raw.mu.Lock()
	snapshot := make(map[string][]rawResource, len(c.raw.accepted))
	for t, m := range c.raw.accepted {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			snapshot[t] = append(snapshot[t], m[n])
		}
	}
	c.raw.mu.Unlock()
	st := c.Status()

	ts := func(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
	lds := &adminv3.ListenersConfigDump{VersionInfo: st.Versions[state.TypeListener]}
	for _, r := range snapshot[state.TypeListener] {
		lds.DynamicListeners = append(lds.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
			Name: resourceName(r.value),
			ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{
				VersionInfo: r.version, Listener: redacted(r.raw), LastUpdated: ts(r.lastUpdated)},
			ClientStatus: adminv3.ClientResourceStatus_ACKED,
		})
	}
	cds := &adminv3.ClustersConfigDump{VersionInfo: st.Versions[state.TypeCluster]}
	for _, r := range snapshot[state.TypeCluster] {
		cds.DynamicActiveClusters = append(cds.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: r.version, Cluster: redacted(r.raw), LastUpdated: ts(r.lastUpdated),
			ClientStatus: adminv3.ClientResourceStatus_ACKED})
	}
	rds := &adminv3.RoutesConfigDump{}
	for _, r := range snapshot[state.TypeRoute] {
		rds.DynamicRouteConfigs = append(rds.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: r.version, RouteConfig: redacted(r.raw), LastUpdated: ts(r.lastUpdated),
			ClientStatus: adminv3.ClientResourceStatus_ACKED})
	}
	eds := &adminv3.EndpointsConfigDump{}
	for _, r := range snapshot[state.TypeEndpoint] {
		eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: r.version, EndpointConfig: redacted(r.raw), LastUpdated: ts(r.lastUpdated),
			ClientStatus: adminv3.ClientResourceStatus_ACKED})
	}
	sds := &adminv3.SecretsConfigDump{}
	for _, r := range snapshot[state.TypeSecret] {
		sds.DynamicActiveSecrets = append(sds.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: resourceName(r.value), VersionInfo: r.version, Secret: redacted(r.raw), LastUpdated: ts(r.lastUpdated),
			ClientStatus: adminv3.ClientResourceStatus_ACKED})
	}
	out := &adminv3.ConfigDump{}
	// Envoy's order: listeners, clusters, routes, endpoints... secrets.
	for _, m := range []proto.Message{lds, cds, rds, eds, sds} {
		a, err := anypb.New(m)
		if err != nil {
			c.log.Error("config_dump", "err", err)
			continue
		}
		out.Configs = append(out.Configs, a)
	}
	return out
}

func resourceName(v any) string {
	switch r := v.(type) {
	case *state.Listener:
		return r.Name
	case *state.Secret:
		return r.Name
	}
	return ""
}

// redactedText replaces sensitive values, as Envoy's admin does.
const redactedText = "[redacted]"

// redacted returns a copy of raw with every field annotated
// (udpa.annotations.sensitive) replaced, looking inside nested Any values
// (transport sockets carry TLS contexts with inline private keys).
func redacted(raw *anypb.Any) *anypb.Any {
	m, err := raw.UnmarshalNew()
	if err != nil {
		// A type this binary cannot resolve cannot be inspected, so it is
		// left out rather than shown unredacted.
		return &anypb.Any{TypeUrl: raw.GetTypeUrl()}
	}
	redact(m.ProtoReflect())
	out, err := anypb.New(m)
	if err != nil {
		return &anypb.Any{TypeUrl: raw.GetTypeUrl()}
	}
	return out
}

func redact(m protoreflect.Message) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		if a.GetValue() != nil {
			r := redacted(a)
			a.Value = r.GetValue()
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if isSensitive(fd) {
			redactField(m, fd)
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				redact(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				redact(mv.Message())
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			redact(v.Message())
		}
		return true
	})
}

func isSensitive(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	s, ok := proto.GetExtension(opts, annotations.E_Sensitive).(bool)
	return ok && s
}

// redactField replaces a sensitive field's value: strings and bytes
// become "[redacted]", and messages (a DataSource private key) have their
// string and bytes leaves replaced, so the field still shows as set.
func redactField(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
	switch {
	case fd.IsList() || fd.IsMap():
		m.Clear(fd)
	case fd.Kind() == protoreflect.StringKind:
		m.Set(fd, protoreflect.ValueOfString(redactedText))
	case fd.Kind() == protoreflect.BytesKind:
		m.Set(fd, protoreflect.ValueOfBytes([]byte(redactedText)))
	case fd.Message() != nil:
		redactLeaves(m.Mutable(fd).Message())
	default:
		m.Clear(fd)
	}
}

func redactLeaves(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		redactField(m, fd)
		return true
	})
}
