package policy

import "github.com/meshlet/meshlet/state"

// PickCluster returns the cluster a route action sends to. rnd is a uniformly
// random number used for weighted_clusters. For cluster_header the named
// header's value is returned ("" when missing; the proxy answers with
// ClusterNotFoundCode). wc is the chosen weighted cluster entry (nil unless
// weighted).
func PickCluster(a *state.RouteAction, r Request, rnd uint64) (cluster string, wc *state.WeightedCluster) {
	if a == nil {
		return "", nil
	}
	switch {
	case a.Cluster != "":
		return a.Cluster, nil
	case len(a.WeightedClusters) > 0:
		total := a.TotalWeight
		if total == 0 {
			for i := range a.WeightedClusters {
				total += uint64(a.WeightedClusters[i].Weight)
			}
		}
		wc = PickWeighted(a.WeightedClusters, total, rnd)
		if wc == nil {
			return "", nil
		}
		return wc.Name, wc
	case a.ClusterHeader != "":
		v, _ := r.Header(a.ClusterHeader)
		return v, nil
	}
	return "", nil
}

// PickWeighted picks one of ws by weight (total is their sum) with rnd, the
// way Envoy does: rnd % total selects a point on the line of consecutive
// weight intervals, so zero-weight entries are never chosen. It returns nil
// when total is 0. tcp_proxy uses it too.
func PickWeighted(ws []state.WeightedCluster, total uint64, rnd uint64) *state.WeightedCluster {
	if total == 0 || len(ws) == 0 {
		return nil
	}
	point := rnd % total
	var end uint64
	for i := range ws {
		end += uint64(ws[i].Weight)
		if point < end {
			return &ws[i]
		}
	}
	// total exceeded the real sum (inconsistent state): fall back to the
	// last entry with weight rather than failing the request.
	for i := len(ws) - 1; i >= 0; i-- {
		if ws[i].Weight > 0 {
			return &ws[i]
		}
	}
	return nil
}
