package capture

import (
	"context"
	"fmt"
	"strconv"
)

// TPROXY delivers diverted packets only if routing sends them to the local
// host: packets carrying the tproxy mark look up a table whose default route
// is local. These helpers program that with ip(8), in the current thread's
// namespace.

func familyFlag(v6 bool) string {
	if v6 {
		return "-6"
	}
	return "-4"
}

func installTProxyRoute(ctx context.Context, cfg Config, v6 bool) error {
	table := strconv.Itoa(cfg.TProxyTable)
	mark := fmt.Sprintf("%#x", cfg.TProxyMark)
	dst := "0.0.0.0/0"
	if v6 {
		dst = "::/0"
	}
	if _, err := run(ctx, "ip", familyFlag(v6), "rule", "add", "fwmark", mark, "lookup", table); err != nil {
		return fmt.Errorf("capture: tproxy rule: %w", err)
	}
	if _, err := run(ctx, "ip", familyFlag(v6), "route", "replace", "local", dst, "dev", "lo", "table", table); err != nil {
		return fmt.Errorf("capture: tproxy route: %w", err)
	}
	return nil
}

// removeTProxyRoute deletes the fwmark rule (every copy) and flushes the
// table. Errors mean "nothing there" and are ignored.
func removeTProxyRoute(ctx context.Context, cfg Config, v6 bool) {
	table := strconv.Itoa(cfg.TProxyTable)
	mark := fmt.Sprintf("%#x", cfg.TProxyMark)
	for range 16 { // bounded: each pass removes one copy
		if _, err := run(ctx, "ip", familyFlag(v6), "rule", "del", "fwmark", mark, "lookup", table); err != nil {
			break
		}
	}
	_, _ = run(ctx, "ip", familyFlag(v6), "route", "flush", "table", table)
}
