package memtrim

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "RssFile:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

func TestTrimBinaryPages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	before := rssFileKB(t)
	n, err := TrimBinaryPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	if n == 0 || after >= before {
		t.Fatalf("advised %d bytes; RssFile %d kB -> %d kB, want a drop", n, before, after)
	}
	// The program keeps working: code and read-only data fault back in.
	var sb strings.Builder
	for i := 0; i < 1000; i++ {
		sb.WriteString(strconv.Itoa(i))
	}
	if len(sb.String()) != 2890 {
		t.Fatalf("computation after trim gave %d", len(sb.String()))
	}
	t.Logf("RssFile %d kB -> %d kB (advised %d kB)", before, after, n>>10)
}

func TestShrinkHeapReturnsBurst(t *testing.T) {
	// A burst: allocate and drop 64 MB.
	keep := make([][]byte, 64)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
		keep[i][0] = 1
	}
	runtime.KeepAlive(keep)
	keep = nil
	runtime.GC()
	var pre runtime.MemStats
	runtime.ReadMemStats(&pre)
	if retained := pre.HeapSys - pre.HeapReleased; retained < 48<<20 {
		t.Fatalf("precondition: the burst left only %d MB retained", retained>>20)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ShrinkHeap(ctx, 50*time.Millisecond)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if retained := ms.HeapSys - ms.HeapReleased; retained > 32<<20 {
		t.Fatalf("heap retained %d MB after shrinking", retained>>20)
	}
}
