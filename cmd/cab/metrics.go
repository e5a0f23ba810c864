package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"cab"
)

// statusCollector exports a cable's Status as Prometheus metrics, read at
// each scrape: the same numbers `cab status` shows.
type statusCollector struct {
	c *cab.Cable

	up, rxFrames, rxBytes, txFrames, txBytes, handshakes, fragmented, wireMTU, macs, drops,
	fdb, clamped, cableDrops *prometheus.Desc

	segPeers, segMACs, segFrames, peerSegment *prometheus.Desc // named segments

	pathQPS, pathLoss, pathRTT, pathQueries *prometheus.Desc // transports that tell (dns)
}

func newStatusCollector(c *cab.Cable) *statusCollector {
	peer := []string{"peer"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("cab_"+name, help, labels, nil)
	}
	return &statusCollector{
		c:          c,
		up:         d("peer_up", "1 when the peer has a session and answers.", append(peer, "transport")...),
		rxFrames:   d("peer_rx_frames_total", "Frames received from the peer.", peer...),
		rxBytes:    d("peer_rx_bytes_total", "Frame bytes received from the peer.", peer...),
		txFrames:   d("peer_tx_frames_total", "Frames sent to the peer.", peer...),
		txBytes:    d("peer_tx_bytes_total", "Frame bytes sent to the peer.", peer...),
		handshakes: d("peer_handshakes_total", "Handshakes completed with the peer.", peer...),
		fragmented: d("peer_fragmented_frames_total", "Frames sent to the peer in fragments.", peer...),
		wireMTU:    d("peer_wire_mtu_bytes", "Largest packet on the path to the peer.", peer...),
		macs:       d("peer_macs", "MACs learned behind the peer.", peer...),
		drops:      d("peer_drops_total", "Packets and frames of the peer dropped, by reason.", "peer", "reason"),
		fdb:        d("fdb_entries", "Entries in the MAC table."),
		clamped:    d("mss_clamped_total", "TCP SYNs whose MSS the cable lowered."),
		cableDrops: d("drops_total", "Packets and frames dropped that belong to no peer, by reason.", "reason"),

		segPeers:    d("segment_peers", "Peers with a session in the segment.", "segment"),
		segMACs:     d("segment_fdb_entries", "Entries in the segment's MAC table.", "segment"),
		segFrames:   d("segment_frames_total", "Frames that entered the segment, from peers or from its port.", "segment", "from"),
		peerSegment: d("peer_segment", "1 for each segment the peer is in.", "peer", "segment"),

		pathQPS:     d("peer_path_queries_per_second", "Queries per second on the path to the peer (dns transport).", peer...),
		pathLoss:    d("peer_path_loss_ratio", "Share of exchanges lost on the path to the peer, 0 to 1 (dns transport).", peer...),
		pathRTT:     d("peer_path_rtt_seconds", "Round-trip time of the path to the peer (dns transport).", peer...),
		pathQueries: d("peer_path_queries_total", "Queries on the path to the peer (dns transport).", peer...),
	}
}

func (s *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.up, s.rxFrames, s.rxBytes, s.txFrames, s.txBytes, s.handshakes,
		s.fragmented, s.wireMTU, s.macs, s.drops, s.fdb, s.clamped, s.cableDrops, s.pathQPS, s.pathLoss, s.pathRTT, s.pathQueries,
		s.segPeers, s.segMACs, s.segFrames, s.peerSegment} {
		ch <- d
	}
}

func (s *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.c.Status()
	counter := prometheus.CounterValue
	gauge := prometheus.GaugeValue
	for _, p := range st.Peers {
		up := 0.0
		if p.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(s.up, gauge, up, p.Name, p.Transport)
		ch <- prometheus.MustNewConstMetric(s.rxFrames, counter, float64(p.RxFrames), p.Name)
		ch <- prometheus.MustNewConstMetric(s.rxBytes, counter, float64(p.RxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(s.txFrames, counter, float64(p.TxFrames), p.Name)
		ch <- prometheus.MustNewConstMetric(s.txBytes, counter, float64(p.TxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(s.handshakes, counter, float64(p.Handshakes), p.Name)
		ch <- prometheus.MustNewConstMetric(s.fragmented, counter, float64(p.Fragmented), p.Name)
		ch <- prometheus.MustNewConstMetric(s.wireMTU, gauge, float64(p.WireMTU), p.Name)
		ch <- prometheus.MustNewConstMetric(s.macs, gauge, float64(p.MACs), p.Name)
		for reason, n := range p.Drops {
			ch <- prometheus.MustNewConstMetric(s.drops, counter, float64(n), p.Name, reason)
		}
		for _, g := range p.Segments {
			ch <- prometheus.MustNewConstMetric(s.peerSegment, gauge, 1, p.Name, g)
		}
		if ps := p.Path; ps != nil {
			ch <- prometheus.MustNewConstMetric(s.pathQPS, gauge, ps.QueriesPerSecond, p.Name)
			ch <- prometheus.MustNewConstMetric(s.pathLoss, gauge, ps.Loss, p.Name)
			ch <- prometheus.MustNewConstMetric(s.pathRTT, gauge, ps.RTT.Seconds(), p.Name)
			ch <- prometheus.MustNewConstMetric(s.pathQueries, counter, float64(ps.Queries), p.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(s.fdb, gauge, float64(st.FDB))
	ch <- prometheus.MustNewConstMetric(s.clamped, counter, float64(st.MSSClamped))
	for reason, n := range st.Drops {
		ch <- prometheus.MustNewConstMetric(s.cableDrops, counter, float64(n), reason)
	}
	for _, g := range st.Segments {
		ch <- prometheus.MustNewConstMetric(s.segPeers, gauge, float64(len(g.Peers)), g.Name)
		ch <- prometheus.MustNewConstMetric(s.segMACs, gauge, float64(g.MACs), g.Name)
		ch <- prometheus.MustNewConstMetric(s.segFrames, counter, float64(g.FromPeers), g.Name, "peers")
		ch <- prometheus.MustNewConstMetric(s.segFrames, counter, float64(g.FromPort), g.Name, "port")
	}
}

// serveMetrics listens on addr and serves /metrics until ctx ends. A port
// that cannot be had is an error at start, not later.
func serveMetrics(ctx context.Context, addr string, c *cab.Cable, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatusCollector(c), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server failed", "err", err)
		}
	}()
	log.Info("metrics", "addr", ln.Addr().String())
	return nil
}
