package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/dns/ndspb"
)

// NDSConfig configures RunNDS.
type NDSConfig struct {
	// Address is the control plane (any grpc.NewClient target).
	Address string
	// Node identifies the proxy. istiod sends a NameTable only to nodes
	// whose metadata sets DNS_CAPTURE to "true" (pilot-agent's
	// ISTIO_META_DNS_CAPTURE); RunNDS adds it when missing.
	Node *core.Node
	// DialOptions default to insecure transport credentials.
	DialOptions []grpc.DialOption
	Table       *Table
	Log         *slog.Logger
}

// RunNDS keeps cfg.Table's NDS source current from a state-of-the-world
// ADS stream subscribed to the NameTable type only, reconnecting with
// backoff until ctx is done. It runs on a stream of its own so the main
// xDS client needs no knowledge of the type; istiod serves any number of
// streams per proxy.
func RunNDS(ctx context.Context, cfg NDSConfig) error {
	if cfg.Address == "" || cfg.Table == nil {
		return errors.New("nds: address and table are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "nds", "server", cfg.Address)
	node := &core.Node{}
	if cfg.Node != nil {
		node = proto.Clone(cfg.Node).(*core.Node)
	}
	if node.Metadata == nil {
		node.Metadata = &structpb.Struct{}
	}
	if node.Metadata.Fields == nil {
		node.Metadata.Fields = map[string]*structpb.Value{}
	}
	if _, ok := node.Metadata.Fields["DNS_CAPTURE"]; !ok {
		node.Metadata.Fields["DNS_CAPTURE"] = structpb.NewStringValue("true")
	}
	opts := cfg.DialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(cfg.Address, opts...)
	if err != nil {
		return fmt.Errorf("nds: %w", err)
	}
	defer conn.Close()
	client := discovery.NewAggregatedDiscoveryServiceClient(conn)
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := ndsStream(ctx, client, node, cfg.Table, log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		log.Warn("NDS stream ended; reconnecting", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// ndsStream runs one stream until it fails.
func ndsStream(ctx context.Context, client discovery.AggregatedDiscoveryServiceClient, node *core.Node, table *Table, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	req := &discovery.DiscoveryRequest{Node: node, TypeUrl: TypeNameTable}
	var version string
	for {
		if err := stream.Send(req); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		// Only the first request carries the node, as Envoy does.
		req = &discovery.DiscoveryRequest{TypeUrl: TypeNameTable, ResponseNonce: resp.GetNonce(), VersionInfo: version}
		if resp.GetTypeUrl() != TypeNameTable {
			continue // not ours; nothing to ACK on this stream
		}
		nt, err := mergeNameTables(resp)
		if err != nil {
			log.Warn("NameTable rejected", "version", resp.GetVersionInfo(), "err", err)
			req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			continue
		}
		version = resp.GetVersionInfo()
		req.VersionInfo = version
		table.SetNDS(HostsFromNameTable(nt))
		log.Debug("NameTable applied", "version", version, "hosts", len(nt.GetTable()))
	}
}

// mergeNameTables decodes every resource of resp (istiod sends one) into
// one table.
func mergeNameTables(resp *discovery.DiscoveryResponse) (*ndspb.NameTable, error) {
	out := &ndspb.NameTable{Table: map[string]*ndspb.NameTable_NameInfo{}}
	for i, r := range resp.GetResources() {
		if r.GetTypeUrl() != TypeNameTable {
			return nil, fmt.Errorf("resource %d: type %q, want %q", i, r.GetTypeUrl(), TypeNameTable)
		}
		var nt ndspb.NameTable
		if err := r.UnmarshalTo(&nt); err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		maps.Copy(out.Table, nt.GetTable())
	}
	return out, nil
}
