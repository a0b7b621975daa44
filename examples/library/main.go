package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/meshlet/meshlet"
)

const bootstrap = `node: {id: library-example, cluster: example}
static_resources:
  listeners:
  - name: outbound_8080
    address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            name: "8080"
            virtual_hosts:
            - name: reviews
              domains: ["reviews.default.svc:8080", "reviews"]
              routes:
              - match: {prefix: /}
                route:
                  retry_policy: {retry_on: 5xx, num_retries: 2}
                  weighted_clusters:
                    clusters:
                    - {name: reviews-v1, weight: 75}
                    - {name: reviews-v2, weight: 25}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: reviews-v1
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: reviews-v1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: reviews-v2
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: reviews-v2
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

func main() {
	v1, v2 := serve("v1"), serve("v2")
	srv := &meshlet.Server{BootstrapYAML: fmt.Appendf(nil, bootstrap, v1, v2)}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: srv.RoundTripper(), Timeout: 5 * time.Second}
	counts := map[string]int{}
	for range 100 {
		resp, err := client.Get("http://reviews.default.svc:8080/")
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		counts[string(body)]++
	}
	fmt.Printf("100 requests through the in-process data plane: %v\n", counts)
}

// serve starts a backend answering with its name and returns its port.
func serve(name string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, name)
		}))
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
