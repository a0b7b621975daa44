package inpod

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/meshlet/meshlet/inpod/zdspb"
)

// serveSession speaks the protocol on one agent connection: hello, then
// one ack per request until the connection ends. Pods outlive the session:
// an agent that reconnects sends a snapshot, and only then are pods it no
// longer knows dropped.
func (s *Server) serveSession(c *net.UnixConn) {
	log := s.log.With("agent", c.RemoteAddr())
	if err := sendMsg(c, &zdspb.ZdsHello{Version: zdspb.Version_V1}); err != nil {
		log.Warn("in-pod hello", "err", err)
		return
	}
	log.Info("in-pod agent connected")
	seen := map[string]bool{} // added or kept since connect
	snapshotDone := false
	for {
		var req zdspb.WorkloadRequest
		files, err := recvMsg(c, &req)
		if err != nil {
			if errors.Is(err, errPeerClosed) || errors.Is(err, net.ErrClosed) {
				log.Info("in-pod agent disconnected")
				return
			}
			var ne net.Error
			if errors.As(err, &ne) || errors.Is(err, os.ErrDeadlineExceeded) {
				log.Warn("in-pod read", "err", err)
				return
			}
			// A message we cannot decode: say so and go on.
			if err := ack(c, err); err != nil {
				return
			}
			continue
		}
		err = s.handle(&req, files, seen, &snapshotDone)
		if err != nil {
			log.Warn("in-pod request failed", "request", describe(&req), "err", err)
		}
		if err := ack(c, err); err != nil {
			log.Warn("in-pod ack", "err", err)
			return
		}
	}
}

// handle applies one request; the files are consumed (kept or closed).
func (s *Server) handle(req *zdspb.WorkloadRequest, files []*os.File, seen map[string]bool, snapshotDone *bool) error {
	closeFiles := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	if _, isAdd := req.Payload.(*zdspb.WorkloadRequest_Add); !isAdd && len(files) > 0 {
		closeFiles(files)
		return fmt.Errorf("%s: unexpected file descriptors", describe(req))
	}
	switch p := req.Payload.(type) {
	case *zdspb.WorkloadRequest_Add:
		uid := p.Add.GetUid()
		if uid == "" {
			closeFiles(files)
			return errors.New("add: empty uid")
		}
		if len(files) != 1 {
			closeFiles(files)
			return fmt.Errorf("add %s: want 1 netns descriptor, got %d", uid, len(files))
		}
		wi := p.Add.GetWorkloadInfo()
		info := WorkloadInfo{Name: wi.GetName(), Namespace: wi.GetNamespace(), ServiceAccount: wi.GetServiceAccount()}
		if err := s.addPod(uid, info, files[0]); err != nil {
			return fmt.Errorf("add %s: %w", uid, err)
		}
		seen[uid] = true
	case *zdspb.WorkloadRequest_Keep:
		uid := p.Keep.GetUid()
		if *snapshotDone {
			return fmt.Errorf("keep %s: only valid before the snapshot is sent", uid)
		}
		if !s.hasPod(uid) {
			return fmt.Errorf("keep %s: no such pod", uid)
		}
		seen[uid] = true
	case *zdspb.WorkloadRequest_Del:
		uid := p.Del.GetUid()
		delete(seen, uid)
		if err := s.delPod(uid); err != nil {
			return fmt.Errorf("del %s: %w", uid, err)
		}
	case *zdspb.WorkloadRequest_SnapshotSent:
		if *snapshotDone {
			return errors.New("snapshot sent twice")
		}
		*snapshotDone = true
		s.reconcile(seen)
	default:
		return errors.New("empty or unknown request")
	}
	return nil
}

func ack(c *net.UnixConn, err error) error {
	a := &zdspb.Ack{}
	if err != nil {
		a.Error = err.Error()
	}
	return sendMsg(c, &zdspb.WorkloadResponse{Payload: &zdspb.WorkloadResponse_Ack{Ack: a}})
}

// describe names a request for logs.
func describe(req *zdspb.WorkloadRequest) string {
	switch p := req.Payload.(type) {
	case *zdspb.WorkloadRequest_Add:
		return "add " + p.Add.GetUid()
	case *zdspb.WorkloadRequest_Keep:
		return "keep " + p.Keep.GetUid()
	case *zdspb.WorkloadRequest_Del:
		return "del " + p.Del.GetUid()
	case *zdspb.WorkloadRequest_SnapshotSent:
		return "snapshot_sent"
	}
	return "unknown"
}
