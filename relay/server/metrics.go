package server

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a message, frame or wakeup was dropped (the "reason" label of
// sotto_relay_dropped_total). A stored message is never dropped: these are
// refused sends, undeliverable ephemeral messages and skipped wakeups.
const (
	dropQueueFull        = "queue_full"            // a send refused: a recipient queue is full
	dropEphemeralUndeliv = "ephemeral_undelivered" // recipient offline or its connection backlogged
	dropPushBacklog      = "push_backlog"          // the wakeup queue was full
	dropProtocol         = "protocol_violation"    // a connection closed for a bad frame
	dropIdle             = "keepalive_timeout"     // a connection closed for a missed pong
)

type metrics struct {
	accepted, duplicates, delivered, acked, expired, blobsExpired, blobsCreated prometheus.Counter
	ephemeral, displaced, ignoredFrames                                         prometheus.Counter
	dropped, sends, push                                                        *prometheus.CounterVec
	connections                                                                 *prometheus.GaugeVec
	sendSeconds, deliveryLag, connectionSeconds                                 prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sotto", Subsystem: "relay", Name: name, Help: help})
	}
	vec := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sotto", Subsystem: "relay", Name: name, Help: help}, []string{label})
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "sotto", Subsystem: "relay", Name: name, Help: help, Buckets: buckets})
	}
	m := &metrics{
		accepted:      counter("messages_accepted_total", "Queue entries stored durably."),
		duplicates:    counter("messages_duplicate_total", "Queue entries not stored again because a retry repeated their message ID."),
		delivered:     counter("messages_delivered_total", "Messages written to a device connection (redeliveries included)."),
		acked:         counter("messages_acked_total", "Messages acknowledged (and so deleted) by devices."),
		expired:       counter("messages_expired_total", "Messages deleted by the sweeper after their retention."),
		blobsCreated:  counter("blobs_created_total", "Blobs uploaded."),
		blobsExpired:  counter("blobs_expired_total", "Blobs deleted by the sweeper after their retention."),
		ephemeral:     counter("ephemeral_delivered_total", "Ephemeral messages handed to a connected device."),
		displaced:     counter("connections_displaced_total", "Connections closed because a newer one of the same device arrived."),
		ignoredFrames: counter("frames_ignored_total", "Frames of unknown type skipped."),
		dropped:       vec("dropped_total", "Sends refused, ephemeral messages and wakeups dropped, connections closed, by reason.", "reason"),
		sends:         vec("sends_total", "Send requests by result code.", "code"),
		push:          vec("push_wakeups_total", "Push wakeups by outcome.", "result"),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "sotto", Subsystem: "relay", Name: "connections",
			Help: "Connections open now, by kind: delivery (a device's authenticated connection) or send (anonymous, send-only)."}, []string{"kind"}),
		sendSeconds:       hist("send_seconds", "Time to accept a send durably.", prometheus.ExponentialBuckets(50e-6, 2, 16)),
		deliveryLag:       hist("delivery_lag_seconds", "Time from storing a message to writing it to its device.", prometheus.ExponentialBuckets(1e-3, 4, 12)),
		connectionSeconds: hist("connection_seconds", "How long device connections lasted.", prometheus.ExponentialBuckets(1, 4, 10)),
	}
	// Both kinds are exported from the start, at zero.
	m.connections.WithLabelValues("delivery")
	m.connections.WithLabelValues("send")
	for _, c := range []prometheus.Collector{m.accepted, m.duplicates, m.delivered, m.acked, m.expired, m.blobsExpired, m.blobsCreated,
		m.ephemeral, m.displaced, m.ignoredFrames, m.dropped, m.sends, m.push, m.connections, m.sendSeconds, m.deliveryLag, m.connectionSeconds} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("relay: metrics already registered on this registerer")
			}
			return nil, err
		}
	}
	return m, nil
}
