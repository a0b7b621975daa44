package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// hcUserAgent is what Envoy's HTTP health checker sends; some backends
// special-case it.
const hcUserAgent = "Envoy/HC"

// prober runs one kind of probe against one host. It keeps its client
// (and so its connection) between probes, as Envoy's reuse_connection
// default does for HTTP and gRPC.
type prober struct {
	c    *Cluster
	cfg  *state.HealthCheck
	host *lb.Host

	httpClient *http.Client
	grpcConn   *grpc.ClientConn
}

func newProber(c *Cluster, cfg *state.HealthCheck, h *lb.Host) *prober {
	return &prober{c: c, cfg: cfg, host: h}
}

func (p *prober) close() {
	if p.httpClient != nil {
		p.httpClient.CloseIdleConnections()
	}
	if p.grpcConn != nil {
		_ = p.grpcConn.Close()
	}
}

func (p *prober) probe(ctx context.Context) hcResult {
	switch p.cfg.Kind {
	case state.HealthCheckHTTP:
		return p.probeHTTP(ctx)
	case state.HealthCheckGRPC:
		return p.probeGRPC(ctx)
	case state.HealthCheckTCP:
		return p.probeTCP(ctx)
	}
	return hcFailNetwork
}

// authority is the configured host or, by default, the cluster name.
func (p *prober) authority(configured string) string {
	if configured != "" {
		return configured
	}
	return p.c.Name
}

func (p *prober) probeHTTP(ctx context.Context) hcResult {
	cfg := p.cfg.HTTP
	if p.httpClient == nil {
		// The cluster's dial originates TLS when configured, so the client
		// always speaks cleartext HTTP over what it gets.
		var alpn []string // the cluster's own ALPN for HTTP/1.1
		protos := new(http.Protocols)
		if cfg.HTTP2 {
			// Prior-knowledge h2c (or h2 over the cluster's TLS).
			protos.SetUnencryptedHTTP2(true)
			alpn = []string{"h2"}
		} else {
			protos.SetHTTP1(true)
		}
		rt := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return p.c.dial(ctx, p.host, alpn...)
			},
			Protocols:           protos,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
		}
		p.httpClient = &http.Client{
			Transport: rt,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	path := cfg.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.host.Address+path, nil)
	if err != nil {
		return hcFailNetwork
	}
	req.Host = p.authority(cfg.Host)
	req.Header.Set("User-Agent", hcUserAgent)
	for _, name := range cfg.RequestHeadersToRemove {
		req.Header.Del(name)
	}
	for _, hv := range cfg.RequestHeadersToAdd {
		switch hv.Action {
		case state.AddIfAbsent:
			if req.Header.Get(hv.Key) == "" {
				req.Header.Set(hv.Key, hv.Value)
			}
		case state.OverwriteIfExistsOrAdd, state.OverwriteIfExists:
			if hv.Action == state.OverwriteIfExists && req.Header.Get(hv.Key) == "" {
				continue
			}
			req.Header.Set(hv.Key, hv.Value)
		default:
			req.Header.Add(hv.Key, hv.Value)
		}
		if strings.EqualFold(hv.Key, "host") {
			req.Host = req.Header.Get("Host")
		}
	}
	resp, err := p.httpClient.Do(req)
	if err != nil {
		return hcFailNetwork
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return classifyStatus(resp.StatusCode, cfg.ExpectedStatuses, cfg.RetriableStatuses)
}

// classifyStatus: expected passes; retriable fails toward the threshold;
// anything else fails at once (Envoy ignores unhealthy_threshold then).
func classifyStatus(code int, expected, retriable []state.StatusRange) hcResult {
	if len(expected) == 0 {
		expected = []state.StatusRange{{Start: 200, End: 201}}
	}
	for _, r := range expected {
		if r.Contains(code) {
			return hcPass
		}
	}
	for _, r := range retriable {
		if r.Contains(code) {
			return hcFailNetwork
		}
	}
	return hcFailActive
}

func (p *prober) probeGRPC(ctx context.Context) hcResult {
	cfg := p.cfg.GRPC
	if p.grpcConn == nil {
		cc, err := grpc.NewClient("passthrough:///"+p.host.Address,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(p.authority(cfg.Authority)),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return p.c.dial(ctx, p.host, "h2")
			}),
			grpc.WithUserAgent(hcUserAgent),
		)
		if err != nil {
			return hcFailNetwork
		}
		p.grpcConn = cc
	}
	resp, err := healthpb.NewHealthClient(p.grpcConn).Check(ctx, &healthpb.HealthCheckRequest{Service: cfg.ServiceName})
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return hcFailNetwork
		}
		// The server answered with an error (UNIMPLEMENTED, NOT_FOUND for
		// an unknown service, ...): the host said no.
		return hcFailActive
	}
	if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		return hcPass
	}
	return hcFailActive
}

// probeTCP connects, writes the send payload and reads until every receive
// chunk has been seen in order (not necessarily contiguous, as Envoy
// matches). With nothing to receive, a connect (and write) is a pass.
func (p *prober) probeTCP(ctx context.Context) hcResult {
	cfg := p.cfg.TCP
	conn, err := p.c.dial(ctx, p.host)
	if err != nil {
		return hcFailNetwork
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if len(cfg.Send) > 0 {
		if _, err := conn.Write(cfg.Send); err != nil {
			return hcFailNetwork
		}
	}
	if len(cfg.Receive) == 0 {
		return hcPass
	}
	var got []byte
	buf := make([]byte, 4096)
	for len(got) < 1<<20 {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if matchInOrder(got, cfg.Receive) {
			return hcPass
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return hcFailActive
			}
			return hcFailNetwork
		}
	}
	return hcFailActive
}

func matchInOrder(data []byte, chunks [][]byte) bool {
	for _, c := range chunks {
		i := bytes.Index(data, c)
		if i < 0 {
			return false
		}
		data = data[i+len(c):]
	}
	return true
}
