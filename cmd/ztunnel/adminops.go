package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/meshlet/meshlet/admin"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/xds"
)

// opsState is what the operational admin endpoints act on.
type opsState struct {
	level     *slog.LevelVar
	bootstrap *bootstrapv3.Bootstrap // redacted clone; nil without one
	loaded    time.Time
	identity  identity.Source

	// quit is closed by /quitquitquit; run waits on it next to the
	// signals, so an admin-requested exit takes the same drain path.
	quit     chan struct{}
	quitOnce sync.Once
}

func (o *opsState) init(cfg proxyConfig) {
	o.level = cfg.LogLevel
	o.identity = cfg.Identity
	o.quit = make(chan struct{})
	o.loaded = time.Now()
	if cfg.Bootstrap != nil {
		b := proto.Clone(cfg.Bootstrap).(*bootstrapv3.Bootstrap)
		xds.Redact(b)
		o.bootstrap = b
	}
}

// quitRequested is closed once /quitquitquit was called.
func (p *proxy) quitRequested() <-chan struct{} { return p.ops.quit }

// opsDeps wires the admin's operational endpoints to this proxy: the
// Envoy-shaped /config_dump (bootstrap, static and pushed resources),
// /stats from the listener and access log counters, /drain_listeners,
// /quitquitquit, /logging and /certs.
func (p *proxy) opsDeps() admin.OpsDeps {
	d := admin.OpsDeps{
		Stats:          p.adminStats,
		DrainListeners: p.drainListeners,
		LogLevel:       p.ops.level,
		Quit:           func() { p.ops.quitOnce.Do(func() { close(p.ops.quit) }) },
		ReopenLogs:     p.accessLogs.logger.Reopen,
	}
	if p.xds != nil || p.ops.bootstrap != nil {
		d.ConfigDump = func() ([]byte, error) {
			return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(p.configDump())
		}
	}
	if p.ops.identity != nil {
		d.Certs = p.certs
	}
	return d
}

// configDump merges the bootstrap and its static resources into the xDS
// client's dump, in Envoy's order: bootstrap, listeners, clusters, routes,
// endpoints, secrets.
func (p *proxy) configDump() *adminv3.ConfigDump {
	out := &adminv3.ConfigDump{}
	if p.xds != nil {
		out = p.xds.ConfigDump()
	}
	b := p.ops.bootstrap
	if b == nil {
		return out
	}
	loaded := timestamppb.New(p.ops.loaded)
	var lds *adminv3.ListenersConfigDump
	var cds *adminv3.ClustersConfigDump
	rest := make([]*anypb.Any, 0, len(out.Configs))
	for _, a := range out.Configs {
		m, err := a.UnmarshalNew()
		if err != nil {
			rest = append(rest, a)
			continue
		}
		switch m := m.(type) {
		case *adminv3.ListenersConfigDump:
			lds = m
		case *adminv3.ClustersConfigDump:
			cds = m
		default:
			rest = append(rest, a)
		}
	}
	if lds == nil {
		lds = &adminv3.ListenersConfigDump{}
	}
	if cds == nil {
		cds = &adminv3.ClustersConfigDump{}
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		lds.StaticListeners = append(lds.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{
			Listener: packDump(l), LastUpdated: loaded})
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		cds.StaticClusters = append(cds.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{
			Cluster: packDump(c), LastUpdated: loaded})
	}
	configs := []*anypb.Any{
		packDump(&adminv3.BootstrapConfigDump{Bootstrap: b, LastUpdated: loaded}),
		packDump(lds), packDump(cds),
	}
	out.Configs = append(configs, rest...)
	return out
}

// mustAny packs m; marshalling a generated message we built cannot fail.
func packDump(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("config_dump: packing %T: %v", m, err))
	}
	return a
}

// certs describes the local identity's certificate chain in the shape of
// Envoy's /certs (envoy.admin.v3.Certificates). The trust bundle is a
// certificate pool, which cannot be listed; its count is not shown.
func (p *proxy) certs() any {
	out := &adminv3.Certificates{}
	cert, err := p.ops.identity.Certificate()
	if err != nil || cert == nil {
		return json.RawMessage(`{"certificates":[]}`)
	}
	c := &adminv3.Certificate{}
	for _, der := range cert.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			continue
		}
		c.CertChain = append(c.CertChain, certDetails(x, "identity"))
	}
	out.Certificates = append(out.Certificates, c)
	b, err := protojson.Marshal(out)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	return json.RawMessage(b)
}

func certDetails(x *x509.Certificate, path string) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{
		Path:           path,
		SerialNumber:   x.SerialNumber.Text(16),
		ValidFrom:      timestamppb.New(x.NotBefore),
		ExpirationTime: timestamppb.New(x.NotAfter),
	}
	if left := time.Until(x.NotAfter); left > 0 {
		d.DaysUntilExpiration = uint64(left / (24 * time.Hour))
	}
	for _, u := range x.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Uri{Uri: u.String()}})
	}
	for _, n := range x.DNSNames {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	for _, ip := range x.IPAddresses {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_IpAddress{IpAddress: ip.String()}})
	}
	return d
}

// adminStats renders Envoy-style listener counters and the access log
// counters.
func (p *proxy) adminStats() map[string]uint64 {
	out := map[string]uint64{}
	p.addListenerStats(out)
	p.accessLogs.stats(out)
	return out
}

// drainListeners fails readiness and stops every listener accepting; open
// connections get the drain time to finish. The rest of the proxy keeps
// running until the process is told to stop.
func (p *proxy) drainListeners() {
	p.draining.Store(true)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.drain)
		defer cancel()
		if err := p.dp.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			p.log.Warn("drain_listeners", "err", err)
		}
		p.log.Info("listeners drained")
	}()
}

// readBootstrapProto parses the bootstrap file again as the raw protobuf
// for /config_dump: config.Bootstrap keeps only the decoded form. config
// already validated the file, so an error here is a race with an edit.
func readBootstrapProto(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := readFileJSON(path)
	if err != nil {
		return nil, err
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	return &b, nil
}

func readFileJSON(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if strings.EqualFold(filepath.Ext(path), ".json") {
		return raw, nil
	}
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	return j, nil
}

// failReadiness makes /ready fail, then waits delay with listeners still
// accepting, so load balancers and kube-proxy stop sending new
// connections before they would be refused.
func (p *proxy) failReadiness(delay time.Duration) {
	p.draining.Store(true)
	if delay > 0 {
		time.Sleep(delay)
	}
}
