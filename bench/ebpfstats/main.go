// Command ebpfstats prints the counters of a pinned eBPF capture (the
// map_stats pin under --capture-bpffs), so bench/ebpf.sh can show that the
// sockmap fast path really carried the traffic it measured.
//
//	ebpfstats /sys/fs/bpf/meshlet
package main

import (
	"fmt"
	"os"
	"path/filepath"

	cebpf "github.com/cilium/ebpf"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ebpfstats PIN_DIR")
		os.Exit(2)
	}
	pins, _ := filepath.Glob(filepath.Join(os.Args[1], "cg-*", "map_stats"))
	if len(pins) == 0 {
		fmt.Fprintln(os.Stderr, "ebpfstats: no map_stats pin under", os.Args[1])
		os.Exit(1)
	}
	for _, pin := range pins {
		m, err := cebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ebpfstats:", err)
			os.Exit(1)
		}
		var sums [2]uint64
		for i := range sums {
			var per []uint64
			if err := m.Lookup(uint32(i), &per); err != nil {
				fmt.Fprintln(os.Stderr, "ebpfstats:", err)
				os.Exit(1)
			}
			for _, v := range per {
				sums[i] += v
			}
		}
		m.Close()
		fmt.Printf("%s captured=%d fastpath_msgs=%d\n", filepath.Base(filepath.Dir(pin)), sums[0], sums[1])
	}
}
