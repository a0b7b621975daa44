package inpod

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/meshlet/meshlet/inpod/zdspb"
)

// Client is the node agent's side of the protocol (istio-cni's role): it
// hands pods to a node proxy and waits for each ack. Tests and tools use
// it; it is not safe for concurrent use.
type Client struct {
	c *net.UnixConn
	// Version is what the proxy's hello announced.
	Version zdspb.Version
	// Timeout bounds each request's ack (default 30s: adding a pod
	// programs its netns).
	Timeout time.Duration
}

// Dial connects to a proxy's in-pod socket and reads its hello.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("inpod: dial %s: %w", path, err)
	}
	cl, err := NewClient(ctx, c.(*net.UnixConn))
	if err != nil {
		c.Close()
		return nil, err
	}
	return cl, nil
}

// NewClient runs the agent's side on an established connection (accepted
// by an agent that serves the socket, or dialed): it reads the hello.
func NewClient(ctx context.Context, c *net.UnixConn) (*Client, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
		defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	}
	var hello zdspb.ZdsHello
	files, err := recvMsg(c, &hello)
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("inpod: hello: %w", err)
	}
	if hello.GetVersion() != zdspb.Version_V1 {
		return nil, fmt.Errorf("inpod: hello: version %v, want V1", hello.GetVersion())
	}
	return &Client{c: c, Version: hello.GetVersion(), Timeout: 30 * time.Second}, nil
}

// Add hands a pod over with its network namespace (kept open by the
// caller; the proxy gets its own copy).
func (cl *Client) Add(uid string, info WorkloadInfo, netns *os.File) error {
	return cl.do(&zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Add{Add: &zdspb.AddWorkload{
		Uid: uid,
		WorkloadInfo: &zdspb.WorkloadInfo{
			Name: info.Name, Namespace: info.Namespace, ServiceAccount: info.ServiceAccount,
		},
	}}}, netns)
}

// Keep tells the proxy, during a snapshot, to keep a pod it already serves.
func (cl *Client) Keep(uid string) error {
	return cl.do(&zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Keep{Keep: &zdspb.KeepWorkload{Uid: uid}}})
}

// Del stops the proxy serving a pod.
func (cl *Client) Del(uid string) error {
	return cl.do(&zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Del{Del: &zdspb.DelWorkload{Uid: uid}}})
}

// SnapshotSent ends the snapshot: the proxy drops pods not added or kept
// since this connection began.
func (cl *Client) SnapshotSent() error {
	return cl.do(&zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_SnapshotSent{SnapshotSent: &zdspb.SnapshotSent{}}})
}

// Close ends the connection; the proxy keeps serving the pods.
func (cl *Client) Close() error { return cl.c.Close() }

// AckError is a request the proxy refused, with its reason.
type AckError struct{ Reason string }

func (e *AckError) Error() string { return "inpod: proxy refused: " + e.Reason }

func (cl *Client) do(req *zdspb.WorkloadRequest, files ...*os.File) error {
	if err := sendMsg(cl.c, req, files...); err != nil {
		return fmt.Errorf("inpod: %s: %w", describe(req), err)
	}
	_ = cl.c.SetReadDeadline(time.Now().Add(cl.Timeout))
	var resp zdspb.WorkloadResponse
	got, err := recvMsg(cl.c, &resp)
	for _, f := range got {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("inpod: %s: ack: %w", describe(req), err)
	}
	a := resp.GetAck()
	if a == nil {
		return fmt.Errorf("inpod: %s: response without ack", describe(req))
	}
	if a.GetError() != "" {
		return &AckError{Reason: a.GetError()}
	}
	return nil
}

// IsRefused reports whether err is the proxy refusing a request (as opposed
// to the connection failing).
func IsRefused(err error) bool {
	var ae *AckError
	return errors.As(err, &ae)
}
