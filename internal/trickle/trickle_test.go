package trickle

import (
	"errors"
	"io"
	"testing"
	"time"
)

func TestBody(t *testing.T) {
	start := time.Now()
	got, err := io.ReadAll(New(3, 10*time.Millisecond, 'x'))
	if err != nil || string(got) != "xxx" {
		t.Fatalf("ReadAll = %q, %v; want xxx", got, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("3 bytes at 10ms each took %v", d)
	}
	b := New(100, time.Hour, 'y')
	b.Close()
	b.Close()
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Read after Close = %v, want io.ErrClosedPipe", err)
	}
}
