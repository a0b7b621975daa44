// Package h2raw is a test-support HTTP/2 client that writes raw frames: a
// connection with the preface sent, an exported x/net Framer and the
// buffered writer under it, an HPACK encoder that does not validate what it
// encodes, and readers that report how the server answered a stream (its
// :status, RST_STREAM, GOAWAY or a closed connection). Attack and
// conformance tests use it to send what a well-behaved client never would:
// malformed header blocks, endless CONTINUATIONs, rapid resets, floods.
//
// It is for tests only: it takes a testing.TB and fails the test on a
// setup error. It imports x/net/http2, x/net/http2/hpack, testing and the
// standard library, and no meshlet package.
package h2raw
