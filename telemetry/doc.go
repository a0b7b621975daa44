// Package telemetry owns what meshlet reports about the traffic it carries:
// the per-request and per-connection records (record.go) that the data
// plane fills at request and connection end, and the sinks that consume
// them — Istio-named Prometheus metrics (metrics*.go), and access logs.
//
// The data plane hands a record by pointer to a Sink; recording must not
// allocate or lock, so the metrics sink keeps atomic counters behind label
// sets resolved once per (listener, cluster, code, ...) key and the
// Prometheus registry reads them only on scrape.
//
// telemetry imports state (for config carried in records) and the
// Prometheus client; it must not import dataplane, xds, admin or cmd —
// those hand it data (cluster stats, xDS status) through small interfaces
// and funcs instead.
package telemetry
