package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client"
)

// Marker starts every text a Stream sends; no server's disk may hold it.
const Marker = "PLAINTEXT-9b41e2"

// Stream is one sender writing numbered texts to one conversation, for
// the exactly-once, in-order checks.
type Stream struct {
	Label  string // names the conversation in the text
	From   *User
	Conv   client.ConversationID
	To     []*User // every device that must receive it
	Attach bool    // every fourth message carries an attachment
	// Pause is the mean pause between messages (default 50 ms).
	Pause time.Duration

	mu     sync.Mutex
	sent   []Sent
	failed int
}

// Sent is a message Send accepted.
type Sent struct {
	Seq    int
	ID     client.MessageID
	Digest [32]byte // of the attachment, if any
}

func (s *Stream) key() string { return s.From.Name + "|" + s.Label }

func (s *Stream) text(seq int) string { return fmt.Sprintf("%s|%s|%d", Marker, s.key(), seq) }

// parseText returns the stream key and the sequence number of a text.
func parseText(t string) (string, int, bool) {
	parts := strings.Split(t, "|")
	if len(parts) != 4 || parts[0] != Marker {
		return "", 0, false
	}
	n, err := strconv.Atoi(parts[3])
	return parts[1] + "|" + parts[2], n, err == nil
}

// Run sends until stop is closed.
func (s *Stream) Run(ctx context.Context, stop <-chan struct{}) {
	pause := s.Pause
	if pause <= 0 {
		pause = 50 * time.Millisecond
	}
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-time.After(pause/2 + time.Duration(mrand.Int64N(int64(pause)))):
		}
		d := client.Text(s.text(seq))
		var digest [32]byte
		if s.Attach && seq%4 == 3 {
			data := make([]byte, 1024+mrand.IntN(8192))
			rand.Read(data)
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			a, err := s.From.C.UploadAttachment(actx, bytes.NewReader(data), "application/octet-stream", "f.bin")
			cancel()
			if err != nil {
				// The server is unreachable: an app would retry the
				// upload; the message is not sent, so nothing is promised.
				s.mu.Lock()
				s.failed++
				s.mu.Unlock()
				continue
			}
			digest = sha256.Sum256(data)
			d = d.WithAttachment(a)
		}
		id, err := s.From.C.Send(ctx, s.Conv, d)
		s.mu.Lock()
		if err != nil {
			s.failed++
		} else {
			s.sent = append(s.sent, Sent{Seq: seq, ID: id, Digest: digest})
		}
		s.mu.Unlock()
	}
}

// Sent returns what Send accepted.
func (s *Stream) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Report is the outcome of Check.
type Report struct {
	Sent        int // messages Send accepted
	Refused     int // sends or uploads that failed at the sender
	Pending     int // never reached status Sent
	Deliveries  int // (message, recipient device) pairs checked
	Attachments int // attachments downloaded and compared
	Missing     int // (message, device) pairs never received
	Duplicates  int // (message, device) pairs received more than once
	OutOfOrder  int // messages received after a later one of their stream
	Errors      []string
}

func (r *Report) errorf(format string, args ...any) {
	if len(r.Errors) < 50 {
		r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
	}
}

// Check waits (up to sentWait) until every message has reached status Sent
// and (up to recvWait) until every recipient has it, then checks that each
// message that reached Sent arrived exactly once at every recipient device,
// in order per sender and conversation, with its attachment intact.
func Check(ctx context.Context, streams []*Stream, sentWait, recvWait time.Duration) Report {
	var rep Report
	deadline := time.Now().Add(sentWait)
	for _, s := range streams {
		rep.Refused += s.failed
		for _, m := range s.Sent() {
			rep.Sent++
			for {
				msg, err := s.From.C.Message(ctx, s.Conv, m.ID)
				if err == nil && msg.Status >= client.StatusSent {
					break
				}
				if time.Now().After(deadline) {
					rep.Pending++
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if rep.Pending > 0 {
		rep.errorf("%d of %d messages never reached Sent within %v", rep.Pending, rep.Sent, sentWait)
	}
	missing := func() int {
		n := 0
		for _, s := range streams {
			for _, r := range s.To {
				have := map[int]bool{}
				for _, m := range r.Received() {
					if k, seq, ok := parseText(m.Text); ok && k == s.key() {
						have[seq] = true
					}
				}
				for _, m := range s.Sent() {
					if !have[m.Seq] {
						n++
					}
				}
			}
		}
		return n
	}
	for deadline := time.Now().Add(recvWait); missing() > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // late duplicates

	for _, s := range streams {
		for _, r := range s.To {
			count := map[int]int{}
			got := map[int]client.Message{}
			last := -1
			for _, m := range r.Received() {
				k, seq, ok := parseText(m.Text)
				if !ok || k != s.key() {
					continue
				}
				count[seq]++
				got[seq] = m
				if seq <= last {
					rep.OutOfOrder++
					rep.errorf("%s saw %s out of order: %d after %d", r.Name, s.key(), seq, last)
				}
				last = max(last, seq)
			}
			for _, m := range s.Sent() {
				rep.Deliveries++
				switch c := count[m.Seq]; {
				case c == 0:
					rep.Missing++
					rep.errorf("%s never received %s #%d", r.Name, s.key(), m.Seq)
				case c > 1:
					rep.Duplicates++
					rep.errorf("%s received %s #%d %d times", r.Name, s.key(), m.Seq, c)
				}
				if m.Digest == ([32]byte{}) || count[m.Seq] == 0 || r.C.Account() == s.From.C.Account() {
					continue // own devices get a transcript; not downloaded here
				}
				g := got[m.Seq]
				if len(g.Attachments) != 1 {
					rep.errorf("%s: %s #%d lost its attachment", r.Name, s.key(), m.Seq)
					continue
				}
				var buf bytes.Buffer
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := r.C.DownloadAttachment(dctx, g.Attachments[0], &buf)
				cancel()
				if err != nil || sha256.Sum256(buf.Bytes()) != m.Digest {
					rep.errorf("%s: attachment of %s #%d: %v", r.Name, s.key(), m.Seq, err)
				}
				rep.Attachments++
			}
		}
	}
	return rep
}
