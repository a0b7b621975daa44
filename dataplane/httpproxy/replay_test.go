package httpproxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestReplayBody(t *testing.T) {
	src := strings.Repeat("x", 1000)
	tests := []struct {
		name       string
		limit      int
		replayable bool
	}{
		{"fits", 4096, true},
		{"too large", 100, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb := newReplayBody(strings.NewReader(src), tt.limit)
			first := rb.reader()
			got, err := io.ReadAll(first)
			if err != nil || string(got) != src {
				t.Fatalf("first attempt read %d bytes, %v", len(got), err)
			}
			if rb.replayable() != tt.replayable {
				t.Fatalf("replayable = %v, want %v", rb.replayable(), tt.replayable)
			}
			second := rb.reader()
			if _, err := first.Read(make([]byte, 1)); err != errReplaySuperseded {
				t.Errorf("stale reader: %v, want errReplaySuperseded", err)
			}
			got, err = io.ReadAll(second)
			if tt.replayable {
				if err != nil || string(got) != src {
					t.Errorf("replay read %d bytes, %v", len(got), err)
				}
				if b, ok := rb.complete(); !ok || !bytes.Equal(b, []byte(src)) {
					t.Errorf("complete() = %d bytes, %v", len(b), ok)
				}
			} else if err != errReplayLost {
				t.Errorf("replay of a dropped body: %v, want errReplayLost", err)
			}
		})
	}
}

// A retry that starts while the first attempt is mid-body gets the
// buffered prefix and then the rest of the live stream.
func TestReplayBodyPartial(t *testing.T) {
	pr, pw := io.Pipe()
	rb := newReplayBody(pr, 1<<10)
	first := rb.reader()
	go func() { _, _ = pw.Write([]byte("hello ")) }()
	buf := make([]byte, 64)
	n, err := first.Read(buf)
	if err != nil || string(buf[:n]) != "hello " {
		t.Fatalf("first read %q %v", buf[:n], err)
	}
	second := rb.reader()
	go func() { _, _ = pw.Write([]byte("world")); pw.Close() }()
	got, err := io.ReadAll(second)
	if err != nil || string(got) != "hello world" {
		t.Errorf("retry body %q %v", got, err)
	}
}
