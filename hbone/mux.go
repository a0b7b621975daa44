package hbone

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// mux is one HBONE HTTP/2 connection, client or server side: a frame read
// loop, serialized frame writes and the streams it carries.
//
// It speaks only what HBONE needs (CONNECT streams carrying bytes) on x/net's
// Framer and hpack, instead of net/http's HTTP/2 server and transport, for
// two reasons: those cannot end a response while the request body still
// flows (TCP half-close from the destination side), and their request and
// response bodies cost a goroutine hand-off and an extra copy per chunk.
// Here DATA payloads are read from TLS straight into the stream's buffer and
// written from the caller's slice without an intermediate frame buffer.
type mux struct {
	conn   net.Conn
	fr     *http2.Framer
	client bool
	// bc, when set, is the socket under conn's TLS, batching its writes
	// until unlockW flushes them.
	bc *bufConn

	// wmu serializes frame writes (and guards henc, hbuf).
	wmu     sync.Mutex
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	dataHdr [9]byte

	mu      sync.Mutex
	connWin *sync.Cond // signalled when sendWindow grows or a stream dies
	streams map[uint32]*stream
	nextID  uint32 // client: next stream id
	lastID  uint32 // server: highest stream id the peer opened
	// Peer settings.
	peerMaxFrame   uint32
	peerInitWindow int32
	peerMaxStreams uint32
	sendWindow     int64 // connection-level send window
	connUnacked    int32 // consumed, not yet returned by WINDOW_UPDATE(0)
	goAway         bool  // no new streams (GOAWAY sent or received)
	err            error // set once the connection is dead
	// draining (server): the first GOAWAY is queued; drained: the final
	// one is, after which the connection closes once it carries no
	// stream. closing: that close is queued.
	draining   bool
	drained    bool
	drainTimer *time.Timer
	closing    bool
	// gotGoAway, peerLast, peerCode: the last GOAWAY the peer sent.
	gotGoAway bool
	peerLast  uint32
	peerCode  http2.ErrCode
	ctrl      []ctrlFrame
	// maxStreams (server) refuses streams beyond this many open ones.
	maxStreams uint32
	// onStream (server) is called on the read loop for each new CONNECT
	// stream; it must copy what it needs from the frame and return quickly.
	onStream func(*stream, *http2.MetaHeadersFrame)

	ctrlReady chan struct{} // wakes the control writer
	done      chan struct{} // closed when the read loop has exited
	ctrlDone  chan struct{} // closed when the control writer has exited
}

// Flow control and framing, tuned for bulk throughput over one connection:
// a large per-stream window lets one tunneled TCP connection fill the pipe,
// the connection window lets many of them do so together, and large frames
// cut per-frame work (TLS records stay at 16 KiB regardless).
const (
	streamWindow = 4 << 20
	connWindow   = 64 << 20
	// maxFrameSize is what we accept (SETTINGS_MAX_FRAME_SIZE).
	maxFrameSize = 1 << 20
	// maxSendFrame caps the DATA frames we write, even when the peer allows
	// more, so one stream does not hold the connection's writer for long.
	maxSendFrame = 256 << 10
	// A window update is sent once this much of a window was consumed.
	streamUpdateAt = streamWindow / 8
	connUpdateAt   = connWindow / 16

	maxHeaderListSize = 16 << 10
	defaultWindow     = 65535 // RFC 9113 initial window before SETTINGS
	defaultFrame      = 16384
)

// errConnClosed ends streams whose connection went away.
var errConnClosed = errors.New("hbone: tunnel connection closed")

// ErrStreamRefused is wrapped by the error of a stream the server did not
// process: refused with REFUSED_STREAM, above the last-stream-id of a
// GOAWAY, or never sent because its connection was going away (RFC 9113
// §8.7). Opening it again, on another connection, is safe; the client pool
// does so once.
var ErrStreamRefused = errors.New("hbone: stream not processed by the server")

// ctrlFrame is a frame the read loop wants sent; it never writes itself so
// that two peers blocked on full TCP buffers cannot deadlock each other.
type ctrlFrame struct {
	kind     http2.FrameType
	streamID uint32
	val      uint32 // window increment or error code
	ping     [8]byte
	// setTable applies the peer's SETTINGS_HEADER_TABLE_SIZE (val) to our
	// encoder before the SETTINGS ack goes out.
	setTable bool
	// closeConn closes the connection once the frames queued before it
	// are flushed (a GOAWAY'd connection with no stream left).
	closeConn bool
	// pingReq sends a PING of our own instead of an ack.
	pingReq bool
}

// drainPing is the payload of the PING that follows our first GOAWAY; its
// ack means the peer has seen that GOAWAY.
var drainPing = [8]byte{'h', 'b', 'o', 'n', 'e', 'g', 'o', 'a'}

// drainAckWait bounds the wait for that ack before the final GOAWAY goes
// out anyway.
const drainAckWait = time.Second

func newMux(conn net.Conn, bc *bufConn, client bool) *mux {
	m := &mux{
		conn:           conn,
		bc:             bc,
		client:         client,
		streams:        map[uint32]*stream{},
		nextID:         1,
		peerMaxFrame:   defaultFrame,
		peerInitWindow: defaultWindow,
		peerMaxStreams: 100, // until the peer's SETTINGS say otherwise
		sendWindow:     defaultWindow,
		ctrlReady:      make(chan struct{}, 1),
		done:           make(chan struct{}),
		ctrlDone:       make(chan struct{}),
	}
	m.connWin = sync.NewCond(&m.mu)
	m.fr = http2.NewFramer(conn, conn)
	m.fr.SetMaxReadFrameSize(maxFrameSize)
	m.fr.SetReuseFrames()
	m.fr.MaxHeaderListSize = maxHeaderListSize
	m.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	m.henc = hpack.NewEncoder(&m.hbuf)
	return m
}

// start sends the preface (client) or reads it (server), then our
// SETTINGS and connection window, and starts the loops.
func (m *mux) start() error {
	if m.client {
		if _, err := io.WriteString(m.conn, http2.ClientPreface); err != nil {
			return fmt.Errorf("write preface: %w", err)
		}
	} else {
		var buf [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(m.conn, buf[:]); err != nil {
			return fmt.Errorf("read preface: %w", err)
		}
		if string(buf[:]) != http2.ClientPreface {
			return errors.New("bad HTTP/2 client preface")
		}
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	}
	if m.client {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: m.maxStreams})
	}
	if err := m.fr.WriteSettings(settings...); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	if err := m.fr.WriteWindowUpdate(0, connWindow-defaultWindow); err != nil {
		return fmt.Errorf("write window update: %w", err)
	}
	if m.bc != nil {
		if err := m.bc.Flush(); err != nil {
			return fmt.Errorf("write settings: %w", err)
		}
	}
	go m.ctrlLoop()
	go m.readLoop()
	return nil
}

// wait blocks until both loops have exited.
func (m *mux) wait() {
	<-m.done
	<-m.ctrlDone
}

// close tears the connection down; streams fail with err.
func (m *mux) close(err error) {
	m.fail(err)
	m.conn.Close()
}

// fail marks the connection dead and fails every stream with err.
func (m *mux) fail(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	m.goAway = true
	if m.drainTimer != nil {
		m.drainTimer.Stop()
	}
	for id, s := range m.streams {
		s.failLocked(err)
		delete(m.streams, id)
	}
	m.connWin.Broadcast()
	m.mu.Unlock()
	select {
	case m.ctrlReady <- struct{}{}:
	default:
	}
}

// canOpen reports whether a client may open another stream here.
func (m *mux) canOpen(active int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err == nil && !m.goAway && active < int(m.peerMaxStreams) && m.nextID < 1<<31-1
}

// alive reports whether the connection can still carry new streams.
func (m *mux) alive() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err == nil && !m.goAway
}

func (m *mux) queueCtrl(f ctrlFrame) {
	m.ctrl = append(m.ctrl, f)
	select {
	case m.ctrlReady <- struct{}{}:
	default:
	}
}

// ctrlLoop writes the control frames the read loop queued.
func (m *mux) ctrlLoop() {
	defer close(m.ctrlDone)
	var batch []ctrlFrame
	for {
		select {
		case <-m.ctrlReady:
		case <-m.done:
			return
		}
		m.mu.Lock()
		batch = append(batch[:0], m.ctrl...)
		m.ctrl = m.ctrl[:0]
		dead := m.err != nil
		m.mu.Unlock()
		if dead {
			return
		}
		m.wmu.Lock()
		var err error
		closeConn := false
		for _, f := range batch {
			if f.closeConn {
				closeConn = true
				continue
			}
			switch f.kind {
			case http2.FrameSettings:
				if f.setTable {
					m.henc.SetMaxDynamicTableSizeLimit(f.val)
				}
				err = m.fr.WriteSettingsAck()
			case http2.FramePing:
				err = m.fr.WritePing(!f.pingReq, f.ping)
			case http2.FrameWindowUpdate:
				err = m.fr.WriteWindowUpdate(f.streamID, f.val)
			case http2.FrameRSTStream:
				err = m.fr.WriteRSTStream(f.streamID, http2.ErrCode(f.val))
			case http2.FrameGoAway:
				err = m.fr.WriteGoAway(f.streamID, http2.ErrCode(f.val), nil)
			}
			if err != nil {
				break
			}
		}
		m.unlockW(&err)
		if err != nil {
			m.close(fmt.Errorf("hbone: write: %w", err))
			return
		}
		if closeConn {
			// The GOAWAY is on the wire and nothing is left to carry.
			m.close(errConnClosed)
			return
		}
	}
}

func (m *mux) readLoop() {
	defer close(m.done)
	err := m.readFrames()
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		m.wmu.Lock()
		werr := m.fr.WriteGoAway(0, http2.ErrCode(ce), nil)
		m.unlockW(&werr)
	}
	m.close(err)
}

func (m *mux) readFrames() error {
	for {
		fh, err := m.fr.ReadFrameHeader()
		if err != nil {
			return readErr(err)
		}
		if fh.Type == http2.FrameData {
			if err := m.readData(fh); err != nil {
				return err
			}
			continue
		}
		f, err := m.fr.ReadFrameForHeader(fh)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				m.resetStream(se.StreamID, se.Code, fmt.Errorf("hbone: stream %d: %v", se.StreamID, se.Code))
				continue
			}
			return readErr(err)
		}
		if err := m.handle(f); err != nil {
			return err
		}
	}
}

// readErr gives a read failure a useful message; a peer that closed its
// end after a complete frame is an ordinary close.
func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errConnClosed
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("hbone: read: %w", err)
}

func (m *mux) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return m.onHeaders(f)
	case *http2.SettingsFrame:
		return m.onSettings(f)
	case *http2.WindowUpdateFrame:
		return m.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			m.mu.Lock()
			m.queueCtrl(ctrlFrame{kind: http2.FramePing, ping: f.Data})
			m.mu.Unlock()
		} else if !m.client && f.Data == drainPing {
			m.finishDrain()
		}
	case *http2.RSTStreamFrame:
		m.mu.Lock()
		s := m.streams[f.StreamID]
		if s != nil {
			err := fmt.Errorf("hbone: stream reset by peer: %v", f.ErrCode)
			if f.ErrCode == http2.ErrCodeRefusedStream {
				err = fmt.Errorf("%w: stream %d reset with %v", ErrStreamRefused, f.StreamID, f.ErrCode)
			}
			s.failLocked(err)
			m.removeLocked(s)
		}
		m.mu.Unlock()
	case *http2.GoAwayFrame:
		m.onGoAway(f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// PRIORITY and unknown frame types are ignored (RFC 9113 5.5).
	return nil
}

// onGoAway stops new streams on this connection. Streams up to the
// peer's last-stream-id go on to their end; later ones (ours, so only on
// the client) were not processed and fail retryably, whatever the error
// code: a GOAWAY with an error is followed by the connection's close,
// which ends the rest. The connection closes when no stream is left.
func (m *mux) onGoAway(f *http2.GoAwayFrame) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.goAway = true
	m.gotGoAway, m.peerLast, m.peerCode = true, f.LastStreamID, f.ErrCode
	if m.client {
		err := fmt.Errorf("%w: peer sent GOAWAY (%v) with last stream %d", ErrStreamRefused, f.ErrCode, f.LastStreamID)
		for id, s := range m.streams {
			if id > f.LastStreamID {
				s.failLocked(err)
				m.removeLocked(s)
			}
		}
	}
	m.closeIfDoneLocked()
}

// drain (server) ends the connection gracefully in two steps (RFC 9113
// §6.8): a GOAWAY(NO_ERROR) with the largest stream id, which stops the
// client opening streams, and a PING; once the PING's ack shows the
// client saw it (or after drainAckWait), the final GOAWAY names the last
// stream the client opened, so a CONNECT that crossed the first GOAWAY on
// the wire is still served rather than refused. Streams up to that id run
// to their end, later ones are refused (REFUSED_STREAM), and the
// connection closes once none is left, at once when it carries none.
func (m *mux) drain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil || m.draining {
		return
	}
	m.draining = true
	m.queueCtrl(ctrlFrame{kind: http2.FrameGoAway, streamID: 1<<31 - 1, val: uint32(http2.ErrCodeNo)})
	m.queueCtrl(ctrlFrame{kind: http2.FramePing, ping: drainPing, pingReq: true})
	m.drainTimer = time.AfterFunc(drainAckWait, m.finishDrain)
}

// finishDrain sends the final GOAWAY of drain.
func (m *mux) finishDrain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.draining || m.drained || m.err != nil {
		return
	}
	m.drained = true
	m.drainTimer.Stop()
	m.goAway = true
	m.queueCtrl(ctrlFrame{kind: http2.FrameGoAway, streamID: m.lastID, val: uint32(http2.ErrCodeNo)})
	m.closeIfDoneLocked()
}

// closeIfDoneLocked queues the close of a connection that takes no new
// streams and carries none, behind any GOAWAY already queued.
func (m *mux) closeIfDoneLocked() {
	if !m.goAway || m.closing || m.err != nil || len(m.streams) > 0 {
		return
	}
	m.closing = true
	m.queueCtrl(ctrlFrame{closeConn: true})
}

func (m *mux) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var tableSize uint32
	var setTable bool
	m.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			m.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			m.peerMaxStreams = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(m.peerInitWindow)
			m.peerInitWindow = int32(s.Val)
			for _, st := range m.streams {
				st.sendWindow += delta
				st.wcond.Broadcast()
			}
		case http2.SettingHeaderTableSize:
			tableSize, setTable = s.Val, true
		}
		return nil
	})
	if err == nil {
		m.queueCtrl(ctrlFrame{kind: http2.FrameSettings, setTable: setTable, val: tableSize})
	}
	m.mu.Unlock()
	return err
}

func (m *mux) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.StreamID == 0 {
		m.sendWindow += int64(f.Increment)
		if m.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		m.connWin.Broadcast()
		return nil
	}
	if s := m.streams[f.StreamID]; s != nil {
		s.sendWindow += int64(f.Increment)
		if s.sendWindow > 1<<31-1 {
			s.failLocked(errors.New("hbone: stream window overflow"))
			m.removeLocked(s)
			m.queueCtrl(ctrlFrame{kind: http2.FrameRSTStream, streamID: s.id, val: uint32(http2.ErrCodeFlowControl)})
			return nil
		}
		s.wcond.Broadcast()
	}
	return nil
}

// readData reads one DATA frame's payload straight into its stream's
// buffer: the only copy between TLS and the caller's Read is the one Read
// itself makes.
func (m *mux) readData(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	length := int(fh.Length)
	var pad int
	if fh.Flags.Has(http2.FlagDataPadded) {
		if length < 1 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		var b [1]byte
		if _, err := io.ReadFull(m.conn, b[:]); err != nil {
			return readErr(err)
		}
		pad = int(b[0])
		if pad > length-1 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	}
	data := length
	if fh.Flags.Has(http2.FlagDataPadded) {
		data = length - 1 - pad
	}
	end := fh.Flags.Has(http2.FlagDataEndStream)

	m.mu.Lock()
	s := m.streams[fh.StreamID]
	// Flow control counts the whole payload, padding included; the
	// padding and anything for a gone stream is returned at once.
	refund := int32(length - data)
	if s == nil || s.recvEnd || s.rerr != nil {
		refund = int32(length)
		s = nil
	} else if int64(data) > int64(s.recvWindow) {
		s.failLocked(errors.New("hbone: peer exceeded the stream window"))
		m.removeLocked(s)
		m.queueCtrl(ctrlFrame{kind: http2.FrameRSTStream, streamID: s.id, val: uint32(http2.ErrCodeFlowControl)})
		m.refundLocked(int32(length))
		m.mu.Unlock()
		return discard(m.conn, data+pad)
	}
	var tail []byte
	if s != nil && data > 0 {
		s.recvWindow -= int32(data)
		tail = s.reserveLocked(data)
	}
	m.refundLocked(refund)
	m.mu.Unlock()

	if s == nil {
		return discard(m.conn, data+pad)
	}
	if tail != nil {
		_, err := io.ReadFull(m.conn, tail)
		m.mu.Lock()
		s.filling = false
		if err == nil {
			if s.closed {
				// Nobody will read it: return the window now.
				m.refundLocked(int32(data))
			} else {
				s.rbuf = s.rbuf[:len(s.rbuf)+data]
			}
		}
		m.mu.Unlock()
		if err != nil {
			return readErr(err)
		}
	}
	if pad > 0 {
		if err := discard(m.conn, pad); err != nil {
			return err
		}
	}
	m.mu.Lock()
	if end {
		s.recvEnd = true
		if s.sentEnd {
			m.removeLocked(s)
		}
	}
	s.rcond.Broadcast()
	m.mu.Unlock()
	return nil
}

func discard(r io.Reader, n int) error {
	if n == 0 {
		return nil
	}
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		return readErr(err)
	}
	return nil
}

func (m *mux) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	m.mu.Lock()
	s := m.streams[id]
	if s == nil && !m.client && id > m.lastID {
		return m.openPeerStreamLocked(f) // unlocks
	}
	if s == nil {
		m.mu.Unlock()
		if !m.client && id <= m.lastID {
			// Trailers or late headers on a stream we already closed.
			return nil
		}
		if m.client && id%2 == 1 && id < m.nextID {
			return nil
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if m.client && !s.gotResp {
		status, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil {
			s.failLocked(errors.New("hbone: response without a valid :status"))
			m.removeLocked(s)
			m.queueCtrl(ctrlFrame{kind: http2.FrameRSTStream, streamID: id, val: uint32(http2.ErrCodeProtocol)})
			m.mu.Unlock()
			return nil
		}
		if status >= 100 && status < 200 {
			m.mu.Unlock()
			return nil // informational
		}
		s.gotResp = true
		s.status = status
		close(s.respc)
	}
	// Anything after the response headers are trailers; only END_STREAM
	// matters.
	if f.StreamEnded() {
		s.recvEnd = true
		s.rcond.Broadcast()
		if s.sentEnd {
			m.removeLocked(s)
		}
	}
	m.mu.Unlock()
	return nil
}

// openPeerStreamLocked accepts a CONNECT stream on the server. m.mu is
// held on entry and released before return.
func (m *mux) openPeerStreamLocked(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		m.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	m.lastID = id
	if m.goAway || uint32(len(m.streams)) >= m.maxStreams {
		m.queueCtrl(ctrlFrame{kind: http2.FrameRSTStream, streamID: id, val: uint32(http2.ErrCodeRefusedStream)})
		m.mu.Unlock()
		return nil
	}
	s := m.newStreamLocked(id)
	s.recvEnd = f.StreamEnded()
	m.mu.Unlock()
	m.onStream(s, f)
	return nil
}

// newStreamLocked registers stream id with the current windows.
func (m *mux) newStreamLocked(id uint32) *stream {
	s := &stream{
		m:          m,
		id:         id,
		sendWindow: int64(m.peerInitWindow),
		recvWindow: streamWindow,
		respc:      make(chan struct{}),
		dead:       make(chan struct{}),
	}
	s.rcond = sync.NewCond(&m.mu)
	s.wcond = sync.NewCond(&m.mu)
	m.streams[id] = s
	return s
}

// removeLocked forgets s.
func (m *mux) removeLocked(s *stream) {
	if m.streams[s.id] == s {
		delete(m.streams, s.id)
		m.connWin.Broadcast()
		m.closeIfDoneLocked()
	}
}

// writeHeaders encodes and writes one HEADERS frame (our header blocks
// are far below any peer's frame size, so no CONTINUATION is needed).
func (m *mux) writeHeadersLocked(id uint32, end bool, fields []hpack.HeaderField) error {
	m.hbuf.Reset()
	for _, f := range fields {
		if err := m.henc.WriteField(f); err != nil {
			return err
		}
	}
	if uint32(m.hbuf.Len()) > m.peerMaxFrameSnapshot() {
		return errors.New("hbone: header block too large")
	}
	return m.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID:      id,
		BlockFragment: m.hbuf.Bytes(),
		EndStream:     end,
		EndHeaders:    true,
	})
}

func (m *mux) peerMaxFrameSnapshot() uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peerMaxFrame
}

// openStream (client) sends a CONNECT for target and waits for the answer.
func (m *mux) openStream(target string, h http.Header) (*stream, error) {
	fields := make([]hpack.HeaderField, 0, 2+len(h))
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: http.MethodConnect},
		hpack.HeaderField{Name: ":authority", Value: target},
	)
	for k, vs := range h {
		for _, v := range vs {
			fields = append(fields, hpack.HeaderField{Name: strings.ToLower(k), Value: v})
		}
	}
	// Stream ids must reach the wire in increasing order: allocate the id
	// and write its HEADERS under the same write lock.
	m.wmu.Lock()
	m.mu.Lock()
	if m.err != nil || m.goAway {
		// Nothing was sent: another connection may take the stream.
		err := fmt.Errorf("%w: connection is going away", ErrStreamRefused)
		if m.err != nil {
			err = fmt.Errorf("%w: %w", ErrStreamRefused, m.err)
		}
		m.mu.Unlock()
		m.wmu.Unlock()
		return nil, err
	}
	id := m.nextID
	m.nextID += 2
	s := m.newStreamLocked(id)
	m.mu.Unlock()
	err := m.writeHeadersLocked(id, false, fields)
	m.unlockW(&err)
	if err != nil {
		m.close(fmt.Errorf("hbone: write: %w", err))
		return nil, err
	}
	return s, nil
}

// serverHeaders are the response fields for status.
func statusFields(status int) []hpack.HeaderField {
	return []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(status)}}
}

// respond (server) writes the response HEADERS for s.
func (m *mux) respond(s *stream, status int, end bool) error {
	m.wmu.Lock()
	err := m.writeHeadersLocked(s.id, end, statusFields(status))
	m.unlockW(&err)
	if err != nil {
		m.close(fmt.Errorf("hbone: write: %w", err))
		return err
	}
	if end {
		m.mu.Lock()
		s.sentEnd = true
		if s.recvEnd {
			m.removeLocked(s)
		}
		m.mu.Unlock()
	}
	return nil
}

// resetStream fails stream id (if open) and tells the peer.
func (m *mux) resetStream(id uint32, code http2.ErrCode, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.streams[id]; s != nil {
		s.failLocked(err)
		m.removeLocked(s)
	}
	if !m.client && id > m.lastID {
		m.lastID = id
	}
	m.queueCtrl(ctrlFrame{kind: http2.FrameRSTStream, streamID: id, val: uint32(code)})
}

// unlockW flushes what the frames written under wmu left in the socket
// buffer, then releases wmu. A flush failure lands in *err unless it
// already holds an error.
func (m *mux) unlockW(err *error) {
	if m.bc != nil {
		if ferr := m.bc.Flush(); ferr != nil && *err == nil {
			*err = ferr
		}
	}
	m.wmu.Unlock()
}

// writeData writes a DATA frame (no flags) for p, under wmu. Unlike the
// Framer, which copies the payload behind the header first, it hands the
// header and the caller's bytes to TLS as two writes: the 9-byte record
// this adds is cheaper than copying up to maxSendFrame bytes, and
// bufConn sends both in one write(2).
func (m *mux) writeData(id uint32, p []byte) error {
	h := m.dataHdr[:]
	h[0], h[1], h[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	h[3] = byte(http2.FrameData)
	h[4] = 0
	h[5], h[6], h[7], h[8] = byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id)
	if _, err := m.conn.Write(h); err != nil {
		return err
	}
	_, err := m.conn.Write(p)
	return err
}

// refundLocked returns n bytes of connection window that no stream will
// consume (padding, data for gone or closed streams), from the read loop:
// the update goes out through the control writer.
func (m *mux) refundLocked(n int32) {
	if n <= 0 {
		return
	}
	m.connUnacked += n
	if m.connUnacked >= connUpdateAt {
		m.queueCtrl(ctrlFrame{kind: http2.FrameWindowUpdate, val: uint32(m.connUnacked)})
		m.connUnacked = 0
	}
}
