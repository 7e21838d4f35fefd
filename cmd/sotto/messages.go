package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/crypto"
)

// target is what a TO argument names.
type target struct {
	conv    client.ConversationID
	contact *client.Contact
	group   *client.Group
	label   string
}

// resolveAccount turns @handle, a contact name or an account ID into an
// account ID. With add, an @handle that is not a contact yet is looked up on
// the key server and added.
func (a *app) resolveAccount(s *session, x string, add bool) (crypto.AccountID, error) {
	ctx := a.ctx
	if h, ok := strings.CutPrefix(x, "@"); ok {
		for id, hh := range s.cfg.Handles {
			if hh == h {
				return crypto.ParseAccountID(id)
			}
		}
		if !add {
			return crypto.AccountID{}, withHint(exitNotFound, client.ErrUnknownContact, "no contact @"+h,
				"add it with \"sotto contacts add @"+h+"\"")
		}
		c, err := s.AddContactByHandle(ctx, h)
		if err != nil {
			return crypto.AccountID{}, fmt.Errorf("looking up @%s: %w", h, err)
		}
		s.cfg.Handles[c.Account.String()] = h
		if err := a.saveConfig(s.cfg); err != nil {
			return crypto.AccountID{}, err
		}
		return c.Account, nil
	}
	if id, err := crypto.ParseAccountID(x); err == nil {
		return id, nil
	}
	contacts, err := s.Contacts(ctx)
	if err != nil {
		return crypto.AccountID{}, err
	}
	for _, c := range contacts {
		if c.Name != "" && strings.EqualFold(c.Name, x) {
			return c.Account, nil
		}
	}
	return crypto.AccountID{}, withHint(exitNotFound, client.ErrUnknownContact, fmt.Sprintf("no contact named %q", x),
		"TO is @handle, a contact name, an account ID or group:NAME; see \"sotto contacts list\"")
}

// findGroup finds a group by name or hex ID.
func (a *app) findGroup(s *session, name string) (client.Group, error) {
	groups, err := s.Groups(a.ctx)
	if err != nil {
		return client.Group{}, err
	}
	for _, g := range groups {
		if g.Name == name || hex.EncodeToString(g.ID[:]) == name {
			return g, nil
		}
	}
	return client.Group{}, withHint(exitNotFound, client.ErrUnknownConversation, fmt.Sprintf("no group %q", name),
		"see \"sotto groups list\"")
}

func (a *app) resolve(s *session, to string, add bool) (target, error) {
	if name, ok := strings.CutPrefix(to, "group:"); ok {
		g, err := a.findGroup(s, name)
		if err != nil {
			return target{}, err
		}
		return target{conv: g.Conversation, group: &g, label: "group:" + g.Name}, nil
	}
	id, err := a.resolveAccount(s, to, add)
	if err != nil {
		return target{}, err
	}
	c, err := s.Contact(a.ctx, id)
	if err != nil {
		if errors.Is(err, client.ErrUnknownContact) || errors.Is(err, client.ErrNotFound) {
			return target{}, withHint(exitNotFound, err, "account "+id.String()+" is not a contact",
				"add it with \"sotto contacts add LINK\"")
		}
		return target{}, err
	}
	return target{conv: c.Conversation, contact: &c, label: a.contactLabel(s, c)}, nil
}

func (a *app) contactLabel(s *session, c client.Contact) string {
	if c.Name != "" {
		return c.Name
	}
	if h := s.cfg.Handles[c.Account.String()]; h != "" {
		return "@" + h
	}
	return c.Account.String()
}

func parseMessageID(s string) (client.MessageID, error) {
	var id client.MessageID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, usageError("bad message ID %q (32 hex digits)", s)
	}
	copy(id[:], b)
	return id, nil
}

func msgID(id client.MessageID) string { return hex.EncodeToString(id[:]) }

// attachmentJSON is attachment metadata as printed.
type attachmentJSON struct {
	FileName    string `json:"file_name"`
	ContentType string `json:"content_type"`
	Size        uint64 `json:"size"`
	Path        string `json:"path,omitempty"`
	Error       string `json:"error,omitempty"`
}

// eventJSON is one line of "receive --json" and one daemon notification.
type eventJSON struct {
	ID           string            `json:"id,omitempty"`
	Type         string            `json:"type"`
	From         string            `json:"from,omitempty"`
	FromHandle   string            `json:"from_handle,omitempty"`
	FromName     string            `json:"from_name,omitempty"`
	Device       *uint32           `json:"device"` // the sending device; null when unknown (older records)
	Timestamp    time.Time         `json:"timestamp"`
	Text         string            `json:"text,omitempty"`
	Conversation string            `json:"conversation,omitempty"`
	Group        string            `json:"group,omitempty"`
	GroupID      string            `json:"group_id,omitempty"`
	ReplyTo      string            `json:"reply_to,omitempty"`
	Attachments  []attachmentJSON  `json:"attachments,omitempty"`
	Status       string            `json:"status,omitempty"`
	Edited       bool              `json:"edited,omitempty"`
	Deleted      bool              `json:"deleted,omitempty"`
	Reactions    map[string]string `json:"reactions,omitempty"`
	IDs          []string          `json:"ids,omitempty"`
	Typing       *bool             `json:"typing,omitempty"`
	Members      []string          `json:"members,omitempty"`
	Devices      []uint32          `json:"devices,omitempty"`
	Added        []uint32          `json:"added,omitempty"`
	Removed      []uint32          `json:"removed,omitempty"`
}

// convNames maps conversations to group names for display.
type convNames map[client.ConversationID]client.Group

func (a *app) groupIndex(s *session) convNames {
	m := convNames{}
	groups, _ := s.Groups(a.ctx)
	for _, g := range groups {
		m[g.Conversation] = g
	}
	return m
}

func (a *app) messageJSON(s *session, groups convNames, typ string, m client.Message) eventJSON {
	e := eventJSON{
		ID: msgID(m.ID), Type: typ, From: m.From.String(),
		FromHandle: s.cfg.Handles[m.From.String()], Timestamp: m.Sent.UTC(), Text: m.Text,
		Conversation: hex.EncodeToString(m.Conversation[:]), Status: m.Status.String(),
		Edited: m.Edited, Deleted: m.Deleted,
	}
	if m.FromDevice != 0 {
		d := uint32(m.FromDevice)
		e.Device = &d
	}
	if m.From == s.Account() {
		e.FromHandle = s.cfg.Handle
	} else if c, err := s.Contact(a.ctx, m.From); err == nil {
		e.FromName = c.Name
	}
	if g, ok := groups[m.Conversation]; ok {
		e.Group, e.GroupID = g.Name, hex.EncodeToString(g.ID[:])
	}
	if m.ReplyTo != nil {
		e.ReplyTo = msgID(*m.ReplyTo)
	}
	for _, at := range m.Attachments {
		e.Attachments = append(e.Attachments, attachmentJSON{FileName: at.FileName, ContentType: at.ContentType, Size: at.Size})
	}
	if len(m.Reactions) > 0 {
		e.Reactions = map[string]string{}
		for k, v := range m.Reactions {
			e.Reactions[k.String()] = v
		}
	}
	return e
}

// saveAttachments downloads a message's attachments into <home>/attachments
// and fills in their paths. A download goes to a temporary file that is
// renamed only once the whole blob is authenticated.
func (a *app) saveAttachments(ctx context.Context, s *session, m client.Message, e *eventJSON) {
	if len(m.Attachments) == 0 {
		return
	}
	dir := filepath.Join(a.home, "attachments")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		for i := range e.Attachments {
			e.Attachments[i].Error = err.Error()
		}
		return
	}
	for i, at := range m.Attachments {
		name := filepath.Base(at.FileName)
		if name == "." || name == "/" || name == ".." || name == "" {
			name = "attachment"
		}
		path := filepath.Join(dir, msgID(m.ID)[:12]+"-"+fmt.Sprint(i)+"-"+name)
		if err := download(ctx, s, at, path); err != nil {
			e.Attachments[i].Error = err.Error()
			continue
		}
		e.Attachments[i].Path = path
	}
}

func download(ctx context.Context, s *session, at client.Attachment, path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".download-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := s.DownloadAttachment(ctx, at, f); err != nil {
		f.Close()
		return fmt.Errorf("downloading attachment: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// printEvent prints one event as text or JSON.
func (a *app) printEvent(e eventJSON) {
	if a.json {
		_ = a.printJSON(e)
		return
	}
	from := e.From
	switch {
	case e.FromName != "":
		from = e.FromName
	case e.FromHandle != "":
		from = "@" + e.FromHandle
	}
	where := ""
	if e.Group != "" {
		where = " in group:" + e.Group
	}
	ts := e.Timestamp.Local().Format("2006-01-02 15:04:05")
	switch e.Type {
	case "message":
		fmt.Fprintf(a.stdout, "[%s] %s%s: %s\n", ts, from, where, e.Text)
		for _, at := range e.Attachments {
			if at.Path != "" {
				fmt.Fprintf(a.stdout, "  attachment %s (%s, %d bytes) saved to %s\n", at.FileName, at.ContentType, at.Size, at.Path)
			} else {
				fmt.Fprintf(a.stdout, "  attachment %s (%s, %d bytes) not saved: %s\n", at.FileName, at.ContentType, at.Size, at.Error)
			}
		}
		fmt.Fprintf(a.stdout, "  id %s\n", e.ID)
	case "update":
		what := "status " + e.Status
		switch {
		case e.Deleted:
			what = "deleted"
		case e.Edited:
			what = "edited: " + e.Text
		case len(e.Reactions) > 0:
			what = fmt.Sprintf("reactions %v", e.Reactions)
		}
		fmt.Fprintf(a.stdout, "[%s] message %s %s\n", ts, e.ID, what)
	case "receipt":
		fmt.Fprintf(a.stdout, "[%s] %s receipt from %s for %s\n", ts, e.Status, from, strings.Join(e.IDs, ", "))
	case "typing":
		state := "stopped typing"
		if e.Typing != nil && *e.Typing {
			state = "is typing"
		}
		fmt.Fprintf(a.stdout, "[%s] %s %s%s\n", ts, from, state, where)
	case "group":
		fmt.Fprintf(a.stdout, "[%s] group %q: members %s\n", ts, e.Group, strings.Join(e.Members, ", "))
	case "safety_number_changed":
		fmt.Fprintf(a.stdout, "[%s] WARNING: the devices of %s changed (added %v, removed %v); compare safety numbers with \"sotto verify\"\n", ts, from, e.Added, e.Removed)
	case "devices":
		fmt.Fprintf(a.stdout, "[%s] this account's devices are now %v\n", ts, e.Devices)
	}
}

// eventFor converts a client event; ok is false for events not printed.
func (a *app) eventFor(s *session, groups convNames, ev client.Event) (eventJSON, bool) {
	now := time.Now().UTC()
	switch ev := ev.(type) {
	case client.MessageEvent:
		return a.messageJSON(s, groups, "message", ev.Message), true
	case client.UpdateEvent:
		e := a.messageJSON(s, groups, "update", ev.Message)
		e.Text = ev.Message.Text
		if ev.Removed {
			e.Deleted = true
		}
		return e, true
	case client.ReceiptEvent:
		e := eventJSON{Type: "receipt", From: ev.From.String(), FromHandle: s.cfg.Handles[ev.From.String()],
			Timestamp: now, Status: ev.Status.String(), Conversation: hex.EncodeToString(ev.Conversation[:])}
		for _, id := range ev.IDs {
			e.IDs = append(e.IDs, msgID(id))
		}
		return e, true
	case client.TypingEvent:
		t := ev.Typing
		e := eventJSON{Type: "typing", From: ev.From.String(), FromHandle: s.cfg.Handles[ev.From.String()],
			Timestamp: now, Typing: &t, Conversation: hex.EncodeToString(ev.Conversation[:])}
		if g, ok := groups[ev.Conversation]; ok {
			e.Group = g.Name
		}
		return e, true
	case client.GroupEvent:
		groups[ev.Group.Conversation] = ev.Group
		e := eventJSON{Type: "group", Timestamp: now, Group: ev.Group.Name, GroupID: hex.EncodeToString(ev.Group.ID[:]),
			Conversation: hex.EncodeToString(ev.Group.Conversation[:])}
		for _, m := range ev.Group.Members {
			e.Members = append(e.Members, m.Account.String())
		}
		return e, true
	case client.SafetyNumberEvent:
		e := eventJSON{Type: "safety_number_changed", From: ev.Contact.String(), FromHandle: s.cfg.Handles[ev.Contact.String()], Timestamp: now}
		for _, d := range ev.Added {
			e.Added = append(e.Added, uint32(d))
		}
		for _, d := range ev.Removed {
			e.Removed = append(e.Removed, uint32(d))
		}
		return e, true
	case client.DeviceEvent:
		e := eventJSON{Type: "devices", Timestamp: now}
		for _, d := range ev.Devices {
			e.Devices = append(e.Devices, uint32(d))
		}
		return e, true
	}
	return eventJSON{}, false
}

// The pending file lists messages that arrived while a command other than
// receive was connected (conversation and message IDs only, no content):
// the next receive prints them from the encrypted history, so no message
// is ever silently swallowed by a send.
func (a *app) pendingPath() string { return filepath.Join(a.home, "pending") }

func (a *app) spool(m client.Message) {
	f, err := os.OpenFile(a.pendingPath(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintf(a.stderr, "sotto: warning: cannot note a received message for the next receive: %v\n", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", hex.EncodeToString(m.Conversation[:]), msgID(m.ID))
}

// takePending returns the spooled messages and empties the file.
func (a *app) takePending(s *session) []client.Message {
	f, err := os.Open(a.pendingPath())
	if err != nil {
		return nil
	}
	var out []client.Message
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cs, is, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		cb, err1 := hex.DecodeString(cs)
		id, err2 := parseMessageID(is)
		var conv client.ConversationID
		if err1 != nil || err2 != nil || len(cb) != len(conv) {
			continue
		}
		copy(conv[:], cb)
		if m, err := s.Message(a.ctx, conv, id); err == nil {
			out = append(out, m)
		}
	}
	f.Close()
	os.Remove(a.pendingPath())
	return out
}

// handleOther deals with events seen by a command that does not print
// them: messages are spooled for the next receive.
func (a *app) handleOther(ev client.Event) {
	if me, ok := ev.(client.MessageEvent); ok {
		a.spool(me.Message)
	}
}

// waitSent waits until the relay accepted message id.
func (a *app) waitSent(s *session, conv client.ConversationID, id client.MessageID, timeout time.Duration) (client.Status, error) {
	var st client.Status
	lastErr, err := a.await(s, timeout, func(ev client.Event) bool {
		u, ok := ev.(client.UpdateEvent)
		if ok && u.Message.ID == id && u.Message.Status >= client.StatusSent && u.Message.Status != client.StatusReceived {
			st = u.Message.Status
			return true
		}
		return false
	})
	if !errors.Is(err, errWaitTimedOut) {
		return st, err
	}
	// The message may have been accepted before we started to listen; the
	// history knows.
	if st, ok := a.statusOf(s, conv, id); ok && st >= client.StatusSent {
		return st, nil
	}
	hint := "the message stays in the outbox and is sent by the next sotto command that connects"
	if lastErr != nil {
		return 0, withHint(exitNetwork, lastErr, "the relay did not accept the message in time: "+lastErr.Error(), hint)
	}
	return 0, withHint(exitNetwork, nil, "the relay did not accept the message in time", hint)
}

// errWaitTimedOut is what await returns when no event it waited for came.
var errWaitTimedOut = errors.New("timed out")

// await reads s's events until want returns true for one, spooling the
// messages it passes over for the next receive. It gives up with
// errWaitTimedOut after timeout, or when the client closes or the command
// is interrupted; lastErr is the last connection error it saw.
func (a *app) await(s *session, timeout time.Duration, want func(client.Event) bool) (lastErr, err error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				return lastErr, client.ErrClosed
			}
			if want(ev) {
				return lastErr, nil
			}
			if ce, ok := ev.(client.ConnectionEvent); ok && ce.Err != nil {
				lastErr = ce.Err
			}
			a.handleOther(ev)
		case <-timer.C:
			return lastErr, errWaitTimedOut
		case <-a.ctx.Done():
			return lastErr, a.ctx.Err()
		}
	}
}

func (a *app) statusOf(s *session, conv client.ConversationID, id client.MessageID) (client.Status, bool) {
	m, err := s.Message(a.ctx, conv, id)
	if err != nil {
		return 0, false
	}
	return m.Status, true
}

// settle keeps an online client running until the relay queue is drained
// and a moment longer, so that what the command queued in the outbox
// (group changes, reactions) goes out now rather than with the next
// command.
func (a *app) settle(s *session, max time.Duration) {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	var grace <-chan time.Time
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				return
			}
			if ce, ok := ev.(client.ConnectionEvent); ok && ce.State == client.Drained && grace == nil {
				grace = time.After(time.Second)
			}
			a.handleOther(ev)
		case <-grace:
			return
		case <-deadline.C:
			return
		case <-a.ctx.Done():
			return
		}
	}
}
