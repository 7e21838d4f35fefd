package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/sotto-im/sotto/client"
)

const chatHelp = `Usage: sotto chat TO

An interactive full-screen conversation: the recent history, new messages
as they arrive (marked read), delivery and read marks on your messages
(✓ sent, ✓✓ delivered, ✓✓ read), and who is typing. Type and press Enter
to send; Ctrl-C or Ctrl-D quits. Messages of other conversations that
arrive meanwhile are kept for the next "sotto receive".

Example:
  $ sotto chat Bob
  $ sotto chat group:family
`

func cmdChat(a *app, args []string) error {
	fs := a.flags("chat", chatHelp)
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	s, t, err := a.openOnlineTo(pos[0])
	if err != nil {
		return err
	}
	defer s.Close()
	v := &chatView{a: a, s: s, t: t, in: a.stdin, out: a.stdout, width: 80, height: 24, typing: map[string]bool{}}
	if f, ok := a.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil && w > 10 && h > 5 {
			v.width, v.height = w, h
		}
	}
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("chat: %w", err)
		}
		defer term.Restore(int(f.Fd()), old)
	}
	fmt.Fprint(v.out, "\x1b[?1049h") // alternate screen
	defer fmt.Fprint(v.out, "\x1b[?1049l")
	return v.run()
}

// chatView is the interactive view. Its input and output are plain
// io.Reader and io.Writer: the terminal in raw mode, or a test's pipes.
type chatView struct {
	a             *app
	s             *session
	t             target
	in            io.Reader
	out           io.Writer
	width, height int
	msgs          []client.Message // oldest first
	input         []rune
	typing        map[string]bool
	notice        string
	typingSent    time.Time
}

func (v *chatView) run() error {
	ctx := v.a.ctx
	hist, err := v.s.History(ctx, v.t.conv, time.Time{}, 100)
	if err != nil {
		return err
	}
	var unread []client.MessageID
	for i := len(hist) - 1; i >= 0; i-- {
		v.msgs = append(v.msgs, hist[i])
		if !hist[i].Outgoing && hist[i].Status == client.StatusReceived {
			unread = append(unread, hist[i].ID)
		}
	}
	if len(unread) > 0 {
		v.s.MarkRead(ctx, v.t.conv, unread...)
	}
	keys := make(chan rune)
	go func() {
		defer close(keys)
		r := bufio.NewReader(v.in)
		for {
			c, _, err := r.ReadRune()
			if err != nil {
				return
			}
			select {
			case keys <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	v.draw()
	esc := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-v.s.Events():
			if !ok {
				return nil
			}
			v.event(ev)
		case c, ok := <-keys:
			if !ok {
				return nil
			}
			switch {
			case esc == 1: // after ESC: '[' or 'O' starts a sequence
				if c == '[' || c == 'O' {
					esc = 2
				} else {
					esc = 0
				}
				continue
			case esc == 2: // a sequence ends with a letter or '~'
				if c >= 0x40 && c <= 0x7e {
					esc = 0
				}
				continue
			}
			switch c {
			case 0x1b:
				esc = 1
				continue
			case 0x03, 0x04:
				if len(v.input) > 0 || !v.typingSent.IsZero() {
					v.s.SetTyping(ctx, v.t.conv, false)
				}
				return nil
			case '\r', '\n':
				v.send()
			case 0x7f, 0x08:
				if len(v.input) > 0 {
					v.input = v.input[:len(v.input)-1]
				}
			case 0x15: // Ctrl-U
				v.input = v.input[:0]
			default:
				if c < 0x20 {
					continue
				}
				v.input = append(v.input, c)
				if time.Since(v.typingSent) > 3*time.Second {
					v.typingSent = time.Now()
					v.s.SetTyping(ctx, v.t.conv, true)
				}
			}
		}
		v.draw()
	}
}

func (v *chatView) send() {
	text := strings.TrimSpace(string(v.input))
	v.input = v.input[:0]
	if text == "" {
		return
	}
	ctx := v.a.ctx
	if !v.typingSent.IsZero() {
		v.typingSent = time.Time{}
		v.s.SetTyping(ctx, v.t.conv, false)
	}
	id, err := v.s.Send(ctx, v.t.conv, client.Text(text))
	if err != nil {
		v.notice = "not sent: " + err.Error()
		return
	}
	if m, err := v.s.Message(ctx, v.t.conv, id); err == nil {
		v.upsert(m)
	}
}

func (v *chatView) upsert(m client.Message) {
	for i := range v.msgs {
		if v.msgs[i].ID == m.ID {
			v.msgs[i] = m
			return
		}
	}
	v.msgs = append(v.msgs, m)
}

func (v *chatView) event(ev client.Event) {
	switch ev := ev.(type) {
	case client.MessageEvent:
		m := ev.Message
		if m.Conversation != v.t.conv {
			v.a.spool(m)
			v.notice = "new message from " + v.who(m.From.String())
			return
		}
		v.upsert(m)
		delete(v.typing, m.From.String())
		if !m.Outgoing {
			v.s.MarkRead(v.a.ctx, v.t.conv, m.ID)
		}
	case client.UpdateEvent:
		if ev.Message.Conversation != v.t.conv {
			return
		}
		if ev.Removed {
			for i := range v.msgs {
				if v.msgs[i].ID == ev.Message.ID {
					v.msgs = append(v.msgs[:i], v.msgs[i+1:]...)
					break
				}
			}
			return
		}
		v.upsert(ev.Message)
	case client.TypingEvent:
		if ev.Conversation == v.t.conv {
			v.typing[ev.From.String()] = ev.Typing
		}
	case client.SafetyNumberEvent:
		v.notice = "the devices of " + v.who(ev.Contact.String()) + " changed: compare safety numbers with \"sotto verify\""
	case client.ConnectionEvent:
		if ev.State == client.Disconnected {
			v.notice = "disconnected; reconnecting"
		} else if ev.State == client.Drained && strings.HasPrefix(v.notice, "disconnected") {
			v.notice = ""
		}
	}
}

func (v *chatView) who(account string) string {
	if h := v.s.cfg.Handles[account]; h != "" {
		return "@" + h
	}
	if len(account) > 8 {
		return account[:8]
	}
	return account
}

// draw repaints the whole screen: a header, as many of the newest
// message lines as fit, a status line and the input line.
func (v *chatView) draw() {
	var lines []string
	for _, m := range v.msgs {
		who := "me"
		if !m.Outgoing {
			who = v.who(m.From.String())
			if c, err := v.s.Contact(v.a.ctx, m.From); err == nil && c.Name != "" {
				who = c.Name
			}
		}
		text := m.Text
		if m.Deleted {
			text = "(deleted)"
		} else if m.Edited {
			text += " (edited)"
		}
		for _, at := range m.Attachments {
			text += " [attachment " + at.FileName + "]"
		}
		line := fmt.Sprintf("%s %s: %s", m.Sent.Local().Format("15:04"), who, text)
		if m.Outgoing {
			line += " " + statusMark(m.Status)
		}
		lines = append(lines, v.clip(line))
	}
	room := v.height - 4
	if len(lines) > room {
		lines = lines[len(lines)-room:]
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	b.WriteString(v.clip("sotto chat with "+v.t.label+" — Enter sends, Ctrl-C quits") + "\r\n")
	b.WriteString(strings.Repeat("─", min(v.width, 60)) + "\r\n")
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	for i := len(lines); i < room; i++ {
		b.WriteString("\r\n")
	}
	var typers []string
	for who, on := range v.typing {
		if on {
			typers = append(typers, v.who(who))
		}
	}
	status := v.notice
	if len(typers) > 0 {
		status = strings.Join(typers, ", ") + " is typing…"
	}
	b.WriteString(v.clip(status) + "\r\n")
	b.WriteString("> " + string(v.input))
	io.WriteString(v.out, b.String())
}

func (v *chatView) clip(s string) string {
	r := []rune(s)
	if len(r) > v.width {
		return string(r[:v.width])
	}
	return s
}
