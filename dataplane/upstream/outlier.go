package upstream

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// EjectionReason says which outlier-detection check ejected a host
// (Envoy's OutlierEjectionType).
type EjectionReason int

const (
	EjectConsecutive5xx EjectionReason = iota
	EjectConsecutiveGatewayFailure
	EjectConsecutiveLocalOriginFailure
	EjectSuccessRate
	EjectSuccessRateLocalOrigin
	EjectFailurePercentage
	EjectFailurePercentageLocalOrigin
	numEjectionReasons
)

func (r EjectionReason) String() string {
	switch r {
	case EjectConsecutive5xx:
		return "consecutive_5xx"
	case EjectConsecutiveGatewayFailure:
		return "consecutive_gateway_failure"
	case EjectConsecutiveLocalOriginFailure:
		return "consecutive_local_origin_failure"
	case EjectSuccessRate:
		return "success_rate"
	case EjectSuccessRateLocalOrigin:
		return "success_rate_local_origin"
	case EjectFailurePercentage:
		return "failure_percentage"
	case EjectFailurePercentageLocalOrigin:
		return "failure_percentage_local_origin"
	}
	return "unknown"
}

// odHost is one host's outlier-detection state. The counters are written
// on the request path (atomics, no lock); the ejection fields only under
// detector.mu.
type odHost struct {
	host *lb.Host

	consec5xx, consecGateway, consecLocal atomic.Uint32
	// Per-interval success-rate buckets, swapped out by each sweep:
	// external origin (upstream responses) and local origin (connect
	// failures, timeouts, resets; only kept apart when split).
	extTotal, extFail     atomic.Uint64
	localTotal, localFail atomic.Uint64

	ejected   bool
	ejectedAt time.Time
	// backoff multiplies base_ejection_time: it grows by one per ejection
	// (while the product is below max_ejection_time) and shrinks by one per
	// interval the host spends un-ejected.
	backoff uint32
	jitter  time.Duration
}

// detector is a cluster's outlier detection. It exists for every cluster;
// with no outlier_detection configured it counts nothing and ejects
// nothing.
type detector struct {
	cfg   atomic.Pointer[state.OutlierDetection] // nil = off
	hosts atomic.Pointer[map[*lb.Host]*odHost]
	// rebuild publishes a picker without (or with again) the hosts whose
	// ejection flag changed.
	rebuild func()
	now     func() time.Time
	// chance returns a number in [0, 100) for enforcing_* percentages.
	chance func() uint32

	mu     sync.Mutex
	active int // hosts currently ejected

	stats odCounters
	stop  chan struct{}
	done  chan struct{}
}

type odCounters struct {
	enforced, overflow [numEjectionReasons]atomic.Uint64
	detected           [numEjectionReasons]atomic.Uint64
}

// OutlierStats are a cluster's outlier-detection counters
// (outlier_detection.ejections_* in Envoy).
type OutlierStats struct {
	// Active is the number of hosts ejected now.
	Active int
	// Enforced counts ejections by reason; Detected counts outliers found,
	// whether enforced or not; Overflow counts ejections skipped because
	// max_ejection_percent was reached.
	Enforced, Detected map[string]uint64
	Overflow           uint64
}

func newDetector(rebuild func()) *detector {
	d := &detector{
		rebuild: rebuild,
		now:     time.Now,
		chance:  func() uint32 { return rand.Uint32N(100) },
	}
	empty := map[*lb.Host]*odHost{}
	d.hosts.Store(&empty)
	return d
}

// configure installs cfg (nil turns detection off and returns every
// ejected host) and starts or stops the sweep goroutine.
func (d *detector) configure(cfg *state.OutlierDetection) {
	old := d.cfg.Swap(cfg)
	switch {
	case cfg != nil && old == nil:
		d.stop, d.done = make(chan struct{}), make(chan struct{})
		go d.run(d.stop, d.done)
	case cfg == nil && old != nil:
		d.halt()
		d.mu.Lock()
		changed := false
		for _, oh := range *d.hosts.Load() {
			if oh.ejected {
				oh.ejected = false
				changed = oh.host.SetEjected(false) || changed
			}
			oh.backoff = 0
		}
		d.active = 0
		d.mu.Unlock()
		if changed {
			d.rebuild()
		}
	}
}

// halt stops the sweep goroutine and waits for it.
func (d *detector) halt() {
	if d.stop != nil {
		close(d.stop)
		<-d.done
		d.stop, d.done = nil, nil
	}
}

// setHosts follows the cluster's host set: new hosts start clean, removed
// ones are forgotten (and no longer count as ejected).
func (d *detector) setHosts(hosts []*lb.Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.hosts.Load()
	next := make(map[*lb.Host]*odHost, len(hosts))
	for _, h := range hosts {
		oh := old[h]
		if oh == nil {
			oh = &odHost{host: h}
		}
		next[h] = oh
	}
	d.active = 0
	for _, oh := range next {
		if oh.ejected {
			d.active++
		}
	}
	d.hosts.Store(&next)
}

func (d *detector) run(stop, done chan struct{}) {
	defer close(done)
	for {
		cfg := d.cfg.Load()
		if cfg == nil {
			return
		}
		t := time.NewTimer(cfg.Interval)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		d.sweep()
	}
}

// gateway reports Envoy's "gateway error": 502, 503, 504.
func gateway(status int) bool { return status == 502 || status == 503 || status == 504 }

// putHTTP counts an upstream response; ejects at once when a consecutive
// threshold is reached.
func (d *detector) putHTTP(h *lb.Host, status int) {
	cfg := d.cfg.Load()
	if cfg == nil {
		return
	}
	oh := (*d.hosts.Load())[h]
	if oh == nil {
		return // host already left the cluster
	}
	if cfg.SplitExternalLocalOriginErrors {
		// A response means the connection worked: a local-origin success.
		oh.consecLocal.Store(0)
		oh.localTotal.Add(1)
	}
	oh.extTotal.Add(1)
	if status < 500 {
		oh.consec5xx.Store(0)
		oh.consecGateway.Store(0)
		return
	}
	oh.extFail.Add(1)
	if gateway(status) {
		if n := oh.consecGateway.Add(1); n == cfg.ConsecutiveGatewayFailure {
			d.onConsecutive(oh, EjectConsecutiveGatewayFailure)
		}
	} else {
		oh.consecGateway.Store(0)
	}
	if n := oh.consec5xx.Add(1); n == cfg.Consecutive5xx {
		d.onConsecutive(oh, EjectConsecutive5xx)
	}
}

// putLocal counts a failure that happened in the proxy. Unless split, it
// counts as the HTTP status Envoy maps it to: 504 for timeouts, 503 for
// connect failures and resets.
func (d *detector) putLocal(h *lb.Host, f LocalFailure) {
	cfg := d.cfg.Load()
	if cfg == nil {
		return
	}
	if !cfg.SplitExternalLocalOriginErrors {
		if f == RequestTimeout {
			d.putHTTP(h, 504)
		} else {
			d.putHTTP(h, 503)
		}
		return
	}
	oh := (*d.hosts.Load())[h]
	if oh == nil {
		return
	}
	oh.localTotal.Add(1)
	oh.localFail.Add(1)
	if n := oh.consecLocal.Add(1); n == cfg.ConsecutiveLocalOriginFailure {
		d.onConsecutive(oh, EjectConsecutiveLocalOriginFailure)
	}
}

// putConnected counts a connection that succeeded and will see no HTTP
// response (tcp_proxy): Envoy's LocalOriginConnectSuccessFinal, which is a
// 200 when not split.
func (d *detector) putConnected(h *lb.Host) {
	cfg := d.cfg.Load()
	if cfg == nil {
		return
	}
	if !cfg.SplitExternalLocalOriginErrors {
		d.putHTTP(h, 200)
		return
	}
	if oh := (*d.hosts.Load())[h]; oh != nil {
		oh.consecLocal.Store(0)
		oh.localTotal.Add(1)
	}
}

func (d *detector) onConsecutive(oh *odHost, why EjectionReason) {
	cfg := d.cfg.Load()
	if cfg == nil {
		return
	}
	d.mu.Lock()
	if oh.ejected || (*d.hosts.Load())[oh.host] != oh {
		d.mu.Unlock()
		return
	}
	d.stats.detected[why].Add(1)
	// The counter starts over whether or not the ejection is enforced.
	switch why {
	case EjectConsecutive5xx:
		oh.consec5xx.Store(0)
	case EjectConsecutiveGatewayFailure:
		oh.consecGateway.Store(0)
	case EjectConsecutiveLocalOriginFailure:
		oh.consecLocal.Store(0)
	}
	changed := false
	if d.enforced(cfg, why) {
		changed = d.ejectLocked(cfg, oh, why)
	}
	d.mu.Unlock()
	if changed {
		d.rebuild()
	}
}

func enforcing(cfg *state.OutlierDetection, why EjectionReason) uint32 {
	switch why {
	case EjectConsecutive5xx:
		return cfg.EnforcingConsecutive5xx
	case EjectConsecutiveGatewayFailure:
		return cfg.EnforcingConsecutiveGatewayFailure
	case EjectConsecutiveLocalOriginFailure:
		return cfg.EnforcingConsecutiveLocalOriginFailure
	case EjectSuccessRate:
		return cfg.EnforcingSuccessRate
	case EjectSuccessRateLocalOrigin:
		return cfg.EnforcingLocalOriginSuccessRate
	case EjectFailurePercentage:
		return cfg.EnforcingFailurePercentage
	case EjectFailurePercentageLocalOrigin:
		return cfg.EnforcingFailurePercentageLocalOrigin
	}
	return 0
}

func (d *detector) enforced(cfg *state.OutlierDetection, why EjectionReason) bool {
	p := enforcing(cfg, why)
	return p >= 100 || (p > 0 && d.chance() < p)
}

// mayEject applies max_ejection_percent the way Envoy does: the share of
// ejected hosts after this ejection must not exceed it, except that with
// always_eject_one_host the first ejection is always allowed.
func mayEject(active, total int, maxPercent uint32, alwaysOne bool) bool {
	if total == 0 {
		return false
	}
	if active == 0 && alwaysOne {
		return true
	}
	return 100*float64(active+1)/float64(total) <= float64(min(maxPercent, 100))
}

// ejectionDuration is how long a host ejected with this backoff stays
// out: base x backoff, capped at max.
func ejectionDuration(cfg *state.OutlierDetection, backoff uint32) time.Duration {
	d := cfg.BaseEjectionTime * time.Duration(backoff)
	if cfg.MaxEjectionTime > 0 && d > cfg.MaxEjectionTime {
		d = cfg.MaxEjectionTime
	}
	return d
}

// ejectLocked ejects oh if max_ejection_percent allows; reports whether it
// did.
func (d *detector) ejectLocked(cfg *state.OutlierDetection, oh *odHost, why EjectionReason) bool {
	if !mayEject(d.active, len(*d.hosts.Load()), cfg.MaxEjectionPercent, cfg.AlwaysEjectOneHost) {
		d.stats.overflow[why].Add(1)
		return false
	}
	if cfg.BaseEjectionTime*time.Duration(oh.backoff) < cfg.MaxEjectionTime || oh.backoff == 0 {
		oh.backoff++
	}
	oh.ejected = true
	oh.ejectedAt = d.now()
	oh.jitter = 0
	if cfg.MaxEjectionTimeJitter > 0 {
		oh.jitter = rand.N(cfg.MaxEjectionTimeJitter)
	}
	d.active++
	d.stats.enforced[why].Add(1)
	oh.host.SetEjected(true)
	return true
}

func (d *detector) unejectLocked(oh *odHost) bool {
	if !oh.ejected {
		return false
	}
	oh.ejected = false
	d.active--
	return oh.host.SetEjected(false)
}

// uneject returns h at once (a passing active health check with
// successful_active_health_check_uneject_host).
func (d *detector) uneject(h *lb.Host) {
	d.mu.Lock()
	changed := false
	if oh := (*d.hosts.Load())[h]; oh != nil {
		changed = d.unejectLocked(oh)
	}
	d.mu.Unlock()
	if changed {
		d.rebuild()
	}
}

// sweep is one interval: return hosts whose ejection time has passed,
// decay the backoff of hosts that stayed in, then run the success-rate and
// failure-percentage checks over the interval's buckets.
func (d *detector) sweep() {
	cfg := d.cfg.Load()
	if cfg == nil {
		return
	}
	now := d.now()
	d.mu.Lock()
	changed := false
	hosts := *d.hosts.Load()
	for _, oh := range hosts {
		if !oh.ejected {
			if oh.backoff > 0 {
				oh.backoff--
			}
			continue
		}
		if now.Sub(oh.ejectedAt) >= ejectionDuration(cfg, oh.backoff)+oh.jitter {
			changed = d.unejectLocked(oh) || changed
		}
	}
	ext := make([]rateSample, 0, len(hosts))
	var local []rateSample
	for _, oh := range hosts {
		total, fail := oh.extTotal.Swap(0), oh.extFail.Swap(0)
		ext = append(ext, rateSample{oh, total, fail})
		if cfg.SplitExternalLocalOriginErrors {
			total, fail = oh.localTotal.Swap(0), oh.localFail.Swap(0)
			local = append(local, rateSample{oh, total, fail})
		}
	}
	changed = d.rateEjections(cfg, ext, EjectSuccessRate, EjectFailurePercentage) || changed
	if cfg.SplitExternalLocalOriginErrors {
		changed = d.rateEjections(cfg, local, EjectSuccessRateLocalOrigin, EjectFailurePercentageLocalOrigin) || changed
	}
	d.mu.Unlock()
	if changed {
		d.rebuild()
	}
}

type rateSample struct {
	oh          *odHost
	total, fail uint64
}

func (s rateSample) successRate() float64 {
	return 100 * float64(s.total-s.fail) / float64(s.total)
}

// successRateThreshold returns mean - stdev x factor/1000 over the
// success rates (percent) of the hosts with at least volume requests, and
// false when fewer than minHosts hosts qualify.
func successRateThreshold(samples []rateSample, volume uint64, minHosts int, factor uint32) (float64, bool) {
	var rates []float64
	for _, s := range samples {
		if s.total > 0 && s.total >= volume {
			rates = append(rates, s.successRate())
		}
	}
	if len(rates) == 0 || len(rates) < minHosts {
		return 0, false
	}
	var sum float64
	for _, r := range rates {
		sum += r
	}
	mean := sum / float64(len(rates))
	var v float64
	for _, r := range rates {
		v += (r - mean) * (r - mean)
	}
	stdev := math.Sqrt(v / float64(len(rates)))
	return mean - stdev*float64(factor)/1000, true
}

func (d *detector) rateEjections(cfg *state.OutlierDetection, samples []rateSample, sr, fp EjectionReason) bool {
	threshold, srOK := successRateThreshold(samples, uint64(cfg.SuccessRateRequestVolume), int(cfg.SuccessRateMinimumHosts), cfg.SuccessRateStdevFactor)
	fpHosts := 0
	for _, s := range samples {
		if s.total > 0 && s.total >= uint64(cfg.FailurePercentageRequestVolume) {
			fpHosts++
		}
	}
	fpOK := fpHosts > 0 && fpHosts >= int(cfg.FailurePercentageMinimumHosts)
	changed := false
	for _, s := range samples {
		if s.oh.ejected || s.total == 0 {
			continue
		}
		rate := s.successRate()
		why := EjectionReason(-1)
		switch {
		case srOK && s.total >= uint64(cfg.SuccessRateRequestVolume) && rate < threshold:
			why = sr
		case fpOK && s.total >= uint64(cfg.FailurePercentageRequestVolume) && 100-rate >= float64(cfg.FailurePercentageThreshold):
			why = fp
		default:
			continue
		}
		d.stats.detected[why].Add(1)
		if d.enforced(cfg, why) && d.ejectLocked(cfg, s.oh, why) {
			changed = true
		}
	}
	return changed
}

func (d *detector) snapshot() OutlierStats {
	d.mu.Lock()
	active := d.active
	d.mu.Unlock()
	st := OutlierStats{Active: active, Enforced: map[string]uint64{}, Detected: map[string]uint64{}}
	for i := range numEjectionReasons {
		if n := d.stats.enforced[i].Load(); n > 0 {
			st.Enforced[i.String()] = n
		}
		if n := d.stats.detected[i].Load(); n > 0 {
			st.Detected[i.String()] = n
		}
		st.Overflow += d.stats.overflow[i].Load()
	}
	return st
}
