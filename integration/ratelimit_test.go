package integration

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func localRateLimit(max uint32, fill time.Duration) *lrlv3.LocalRateLimit {
	return &lrlv3.LocalRateLimit{
		StatPrefix:     "http_local_rate_limiter",
		TokenBucket:    &typev3.TokenBucket{MaxTokens: max, FillInterval: durationpb.New(fill)},
		FilterEnabled:  &corev3.RuntimeFractionalPercent{DefaultValue: percent(100)},
		FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: percent(100)},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-local-rate-limit", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
	}
}

// TestLocalRateLimitHTTP: the listener's bucket (5 tokens, no refill
// within the test) lets 5 requests through and answers the rest 429 with
// flag RL, x-envoy-ratelimited and the configured header; a route with its
// own per-route config has its own bucket (2 tokens).
func TestLocalRateLimitHTTP(t *testing.T) {
	be := startBackend(t, "v1")
	own := routeTo("v1")
	own.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/own"}
	own.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": anyOf(t, localRateLimit(2, time.Hour))}
	m := startFilterMesh(t, []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.local_ratelimit", localRateLimit(5, time.Hour))},
		vhost(own, routeTo("v1")), false, map[string]string{"v1": be.addr})
	waitListening(t, m.listener)
	c := h1Client()

	var codes []int
	for range 8 {
		resp, err := c.Get(m.url("/shared"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 {
			if resp.Header.Get("x-meshlet-response-flags") != "RL" || resp.Header.Get("x-envoy-ratelimited") != "true" ||
				resp.Header.Get("x-local-rate-limit") != "true" || string(body) != "local_rate_limited" {
				t.Fatalf("429 reply: headers %v body %q", resp.Header, body)
			}
		}
	}
	// startFilterMesh waits with a TCP dial, which takes no token.
	want := []int{200, 200, 200, 200, 200, 429, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("shared bucket: %v, want %v", codes, want)
	}
	codes = codes[:0]
	for range 3 {
		code, _, _ := do(t, c, m.url("/own"))
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Fatalf("route bucket: %v, want [200 200 429]", codes)
	}
}

// TestLocalRateLimitRefill: with one token per 300ms, a burst gets one
// request through and the bucket refills for the next.
func TestLocalRateLimitRefill(t *testing.T) {
	be := startBackend(t, "v1")
	m := startFilterMesh(t, []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.local_ratelimit", localRateLimit(1, 300*time.Millisecond))},
		vhost(routeTo("v1")), false, map[string]string{"v1": be.addr})
	c := h1Client()
	time.Sleep(350 * time.Millisecond)
	a, _, _ := do(t, c, m.url("/"))
	b, _, _ := do(t, c, m.url("/"))
	time.Sleep(350 * time.Millisecond)
	d, _, _ := do(t, c, m.url("/"))
	if a != 200 || b != 429 || d != 200 {
		t.Fatalf("got %d %d %d, want 200 429 200", a, b, d)
	}
}

// TestNetworkRateLimit: a network local_ratelimit before tcp_proxy admits
// max_tokens connections and closes the next ones at once, before they
// reach the backend.
func TestNetworkRateLimit(t *testing.T) {
	echo := startTCPEcho(t)
	echoHost, echoPort := splitHostPort(t, echo)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	host, port := splitHostPort(t, addr)
	// Static resources: no xDS push can rebuild the cluster or the
	// listener while the test counts tokens.
	startProxy(t, nil, proxyOpts{bootstrapExtra: fmt.Sprintf(`static_resources:
  listeners:
  - name: limited
    address: {socket_address: {address: %s, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
          stat_prefix: conn
          token_bucket: {max_tokens: 3, fill_interval: 3600s}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %d}}}
`, host, port, echoHost, echoPort)})

	// One connection at a time, each kept open: the limit counts new
	// connections, not open ones.
	var got []string
	for i := range 5 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		msg := fmt.Sprintf("conn%d", i)
		_, _ = c.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			got = append(got, "closed")
		} else {
			got = append(got, string(buf))
		}
	}
	if fmt.Sprint(got) != "[conn0 conn1 conn2 closed closed]" {
		t.Fatalf("connections: %v", got)
	}
}
