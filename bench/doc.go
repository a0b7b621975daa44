// Package bench holds the benchmark harness (run.sh, report.py) that
// measures meshlet against haproxy, nginx and a direct connection in one
// run. It is not part of `make test`; run it with `make bench`.
package bench
