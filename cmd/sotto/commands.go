package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/crypto"
)

const registerHelp = `Usage: sotto register --server URL [--handle NAME] [--trust-root TEXT]

Creates an account on a sottod server and prints its account ID.

The server's sender-certificate trust root is pinned in the home directory.
With --trust-root TEXT (the "sotto-root:..." line sottod prints on start)
that root is pinned as given; without it the root is fetched from
GET URL/v1/trust-root on this first use (trust on first use) and its
fingerprint is printed so that you can compare it with the server's.

Flags:
  --server URL        base URL of the sottod server (or $SOTTO_SERVER)
  --handle NAME       also claim @NAME on the key server
  --trust-root TEXT   pin this trust root instead of fetching it

Example:
  $ sotto register --server https://sotto.example.org --handle alice
  $ sotto register --server http://127.0.0.1:7340 --trust-root sotto-root:...
`

func cmdRegister(a *app, args []string) error {
	fs := a.flags("register", registerHelp)
	server := fs.String("server", a.env["SOTTO_SERVER"], "")
	handle := fs.String("handle", "", "")
	rootText := fs.String("trust-root", "", "")
	if _, err := a.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *server == "" {
		return usageError("register: --server URL is required")
	}
	*handle = strings.TrimPrefix(*handle, "@")
	if err := a.checkEmptyHome("pass --home DIR (or set SOTTO_HOME) for another account"); err != nil {
		return err
	}
	cfg := &config{Server: strings.TrimRight(*server, "/"), Handle: *handle}
	c, root, fetched, err := a.newHome("register", cfg, *rootText, "New passphrase: ", func(opts client.Options) (*client.Client, error) {
		opts.Handle = *handle
		c, err := client.Create(a.ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("registering: %w", err)
		}
		return c, nil
	})
	if err != nil {
		return err
	}
	defer c.Close()
	how := "pinned from --trust-root"
	if fetched {
		how = "fetched from the server on first use"
	}
	if a.json {
		return a.printJSON(map[string]any{"account": c.Account().String(), "device": uint32(c.Device()),
			"handle": *handle, "trust_root_fingerprint": root.Fingerprint(), "trust_root_source": how})
	}
	fmt.Fprintf(a.stdout, "trust root fingerprint: %s (%s)\n", root.Fingerprint(), how)
	fmt.Fprintf(a.stdout, "registered account %s device %d\n", c.Account(), c.Device())
	if *handle != "" {
		fmt.Fprintf(a.stdout, "handle @%s\n", *handle)
	}
	return nil
}

func (a *app) fetchTrustRoot(server string) (string, error) {
	req, err := http.NewRequestWithContext(a.ctx, http.MethodGet, server+"/v1/trust-root", nil)
	if err != nil {
		return "", usageError("register: bad --server URL: %v", err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return "", withHint(exitNetwork, err, "fetching the trust root: "+err.Error(), "is the server reachable at "+server+"?")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", &client.APIError{Status: resp.StatusCode, Message: "trust root: " + resp.Status}
	}
	var body struct {
		TrustRoot string `json:"trust_root"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil {
		return "", fmt.Errorf("fetching the trust root: %w", err)
	}
	return body.TrustRoot, nil
}

const whoamiHelp = `Usage: sotto whoami [--qr]

Prints the account ID, this device's number, the handle and the invite link
that others pass to "sotto contacts add".

With --qr the invite is also drawn as a QR code (Unicode blocks, for a
dark terminal background) for a phone to scan.

Example:
  $ sotto whoami
  $ sotto --json whoami
`

func cmdWhoami(a *app, args []string) error {
	fs := a.flags("whoami", whoamiHelp)
	qr := fs.Bool("qr", false, "")
	if _, err := a.parse(fs, args, 0, 0); err != nil {
		return err
	}
	s, err := a.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	inv := s.Invite(false)
	if a.json {
		return a.printJSON(map[string]any{"account": s.Account().String(), "device": uint32(s.Device()),
			"handle": s.cfg.Handle, "invite": inv.String(), "server": s.cfg.Server})
	}
	fmt.Fprintf(a.stdout, "account %s\ndevice  %d\n", s.Account(), s.Device())
	if s.cfg.Handle != "" {
		fmt.Fprintf(a.stdout, "handle  @%s\n", s.cfg.Handle)
	}
	fmt.Fprintf(a.stdout, "invite  %s\n", inv)
	if *qr {
		if err := renderQR(a.stdout, inv.QRPayload()); err != nil {
			return err
		}
	}
	return nil
}

const contactsHelp = `Usage:
  sotto contacts add (LINK | @handle) [--name NAME]
  sotto contacts list
  sotto contacts block ID
  sotto contacts unblock ID

"add" verifies the account's device list against its account ID before
trusting it; a handle is only a directory entry. ID may also be a contact
name or @handle.

Example:
  $ sotto contacts add @bob --name Bob
  $ sotto contacts add 'sotto://...' --name Carol
  $ sotto --json contacts list
`

func cmdContacts(a *app, args []string) error {
	fs := a.flags("contacts", contactsHelp)
	name := fs.String("name", "", "")
	pos, err := a.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	switch pos[0] {
	case "add":
		if len(pos) != 2 {
			return usageError("contacts add: LINK or @handle required")
		}
		s, err := a.openSpooling() // the key server login happens when connecting
		if err != nil {
			return err
		}
		defer s.Close()
		var c client.Contact
		if h, ok := strings.CutPrefix(pos[1], "@"); ok {
			c, err = s.AddContactByHandle(a.ctx, h)
			if err != nil {
				return fmt.Errorf("adding @%s: %w", h, err)
			}
			s.cfg.Handles[c.Account.String()] = h
			if err := a.saveConfig(s.cfg); err != nil {
				return err
			}
		} else {
			c, err = s.AddContact(a.ctx, pos[1])
			if errors.Is(err, client.ErrInvalidInvite) {
				return usageError("contacts add: %q is neither an invite link nor an @handle", pos[1])
			}
			if err != nil {
				return fmt.Errorf("adding contact: %w", err)
			}
		}
		if *name != "" {
			if err := s.SetContactName(a.ctx, c.Account, *name); err != nil {
				return err
			}
			c.Name = *name
		}

		if a.json {
			return a.printJSON(a.contactJSON(s, c))
		}
		fmt.Fprintf(a.stdout, "added %s (%s)\n", c.Account, a.contactLabel(s, c))
		return nil
	case "list":
		s, err := a.open(true)
		if err != nil {
			return err
		}
		defer s.Close()
		cs, err := s.Contacts(a.ctx)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if a.json {
				a.printJSON(a.contactJSON(s, c))
				continue
			}
			flags := ""
			if c.Verified {
				flags += " verified"
			}
			if c.Blocked {
				flags += " blocked"
			}
			fmt.Fprintf(a.stdout, "%s  %-16s %-16s devices %v%s\n", c.Account, c.Name, atHandle(s.cfg.Handles[c.Account.String()]), c.Devices, flags)
		}
		return nil
	case "block", "unblock":
		if len(pos) != 2 {
			return usageError("contacts %s: ID required", pos[0])
		}
		s, err := a.open(true)
		if err != nil {
			return err
		}
		defer s.Close()
		id, err := a.resolveAccount(s, pos[1], false)
		if err != nil {
			return err
		}
		if err := s.SetBlocked(a.ctx, id, pos[0] == "block"); err != nil {
			return err
		}
		if !a.json {
			fmt.Fprintf(a.stdout, "%sed %s\n", pos[0], id)
		}
		return nil
	}
	return usageError("contacts: unknown subcommand %q", pos[0])
}

func atHandle(h string) string {
	if h == "" {
		return ""
	}
	return "@" + h
}

func (a *app) contactJSON(s *session, c client.Contact) map[string]any {
	devs := []uint32{}
	for _, d := range c.Devices {
		devs = append(devs, uint32(d))
	}
	return map[string]any{"account": c.Account.String(), "name": c.Name, "handle": s.cfg.Handles[c.Account.String()],
		"blocked": c.Blocked, "verified": c.Verified, "devices": devs}
}

const sendHelp = `Usage: sotto send TO [TEXT] [flags]

Sends a message and exits 0 once the relay has accepted it (it is in the
encrypted outbox before that, and the next command that connects retries
it if sotto is interrupted). TEXT is read from stdin when omitted. TO is
@handle, a contact name, an account ID or group:NAME; an @handle that is
not a contact yet is looked up and added.

Flags:
  --attach FILE      attach a file (repeatable)
  --reply MSGID      reply to a message
  --react EMOJI      react to --target MSGID (an empty EMOJI removes it)
  --target MSGID     the message to react to
  --edit MSGID       replace the text of one of your messages
  --delete MSGID     delete one of your messages for everyone
  --expire DURATION  set the conversation's disappearing-message timer
                     (0 turns it off) before sending
  --timeout D        how long to wait for the relay (default 60s)

With --json it prints {"id": ..., "status": ...}.

Example:
  $ sotto send @bob "hello"
  $ sotto send group:family --attach photo.jpg "the view from here"
  $ date | sotto --json send Bob
  $ sotto send Bob --react "👍" --target 0123456789abcdef0123456789abcdef
`

func cmdSend(a *app, args []string) error {
	fs := a.flags("send", sendHelp)
	var attach stringList
	fs.Var(&attach, "attach", "")
	reply := fs.String("reply", "", "")
	react := new(string)
	targetID := fs.String("target", "", "")
	edit := fs.String("edit", "", "")
	del := fs.String("delete", "", "")
	expire := fs.String("expire", "", "")
	timeout := fs.Duration("timeout", 60*time.Second, "")
	reacting := false
	fs.Func("react", "", func(v string) error { *react, reacting = v, true; return nil })
	pos, err := a.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	if reacting != (*targetID != "") {
		return usageError("send: --react and --target go together")
	}
	var expireD time.Duration
	if *expire != "" {
		if expireD, err = time.ParseDuration(*expire); err != nil || expireD < 0 {
			return usageError("send: bad --expire %q", *expire)
		}
	}
	control := reacting || *del != ""
	text, haveText := "", len(pos) == 2
	switch {
	case haveText:
		text = pos[1]
	case control, (len(attach) > 0 || *expire != "") && *edit == "" && isTerminal(a.stdin):
		// Nothing to read: a caption or text is optional here.
	default:
		if isTerminal(a.stdin) {
			fmt.Fprintln(a.stderr, "sotto: reading the message from stdin; end it with Ctrl-D")
		}
		b, err := io.ReadAll(io.LimitReader(a.stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		text = strings.TrimRight(string(b), "\n")
		haveText = text != "" || *expire == ""
	}
	// Parse everything before opening the store (which costs scrypt).
	parseOpt := func(s string) (*client.MessageID, error) {
		if s == "" {
			return nil, nil
		}
		id, err := parseMessageID(s)
		return &id, err
	}
	replyID, err := parseOpt(*reply)
	if err != nil {
		return err
	}
	editID, err := parseOpt(*edit)
	if err != nil {
		return err
	}
	delID, err := parseOpt(*del)
	if err != nil {
		return err
	}
	tgtID, err := parseOpt(*targetID)
	if err != nil {
		return err
	}
	for _, f := range attach {
		if _, err := os.Stat(f); err != nil {
			return withHint(exitNotFound, err, "attachment: "+err.Error())
		}
	}

	s, t, err := a.openOnlineTo(pos[0])
	if err != nil {
		return err
	}
	defer s.Close()
	if *expire != "" {
		if err := s.SetTimer(a.ctx, t.conv, expireD); err != nil {
			return fmt.Errorf("setting the timer: %w", err)
		}
	}
	switch {
	case reacting:
		if err := s.React(a.ctx, t.conv, *tgtID, *react); err != nil {
			return fmt.Errorf("reacting: %w", err)
		}
		return a.finishControl(s, "reaction sent")
	case delID != nil:
		if err := s.Delete(a.ctx, t.conv, *delID); err != nil {
			return fmt.Errorf("deleting: %w", err)
		}
		return a.finishControl(s, "deletion sent")
	case editID != nil:
		if err := s.Edit(a.ctx, t.conv, *editID, text); err != nil {
			return fmt.Errorf("editing: %w", err)
		}
		return a.finishControl(s, "edit sent")
	}
	if !haveText && len(attach) == 0 {
		return a.finishControl(s, "timer set")
	}
	d := client.Text(text)
	if replyID != nil {
		d = d.ReplyTo(*replyID)
	}
	for _, f := range attach {
		at, err := a.upload(s, f)
		if err != nil {
			return err
		}
		d = d.WithAttachment(at)
	}
	id, err := s.Send(a.ctx, t.conv, d)
	if err != nil {
		if errors.Is(err, client.ErrBlocked) {
			return withHint(exitError, err, "send: "+err.Error(), "unblock with \"sotto contacts unblock\"")
		}
		return fmt.Errorf("sending: %w", err)
	}
	st, err := a.waitSent(s, t.conv, id, *timeout)
	if err != nil {
		if a.json {
			a.printJSON(map[string]any{"id": msgID(id), "status": client.StatusPending.String()})
		}
		return err
	}
	if a.json {
		return a.printJSON(map[string]any{"id": msgID(id), "status": st.String()})
	}
	fmt.Fprintf(a.stdout, "sent %s to %s\n", msgID(id), t.label)
	return nil
}

func (a *app) upload(s *session, path string) (client.Attachment, error) {
	f, err := os.Open(path)
	if err != nil {
		return client.Attachment{}, withHint(exitNotFound, err, "attachment: "+err.Error())
	}
	defer f.Close()
	ct := mime.TypeByExtension(filepath.Ext(path))
	if ct == "" {
		head := make([]byte, 512)
		n, _ := io.ReadFull(f, head)
		ct = http.DetectContentType(head[:n])
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return client.Attachment{}, err
		}
	}
	at, err := s.UploadAttachment(a.ctx, f, ct, filepath.Base(path))
	if err != nil {
		return client.Attachment{}, fmt.Errorf("uploading %s: %w", path, err)
	}
	return at, nil
}

func (a *app) finishControl(s *session, what string) error {
	a.settle(s, 10*time.Second)
	if a.json {
		return a.printJSON(map[string]any{"status": "queued"})
	}
	fmt.Fprintln(a.stdout, what)
	return nil
}

const receiveHelp = `Usage: sotto receive [--timeout D] [--follow]

Connects, prints every message, receipt and event waiting at the relay and
those that arrive until nothing has arrived for --timeout (default 5s),
then exits; with --follow it runs until interrupted. Attachments are saved
under the home's attachments directory and their paths printed.

With --json it prints one object per line: id, type (message, update,
receipt, typing, group, safety_number_changed, devices), from (account
ID), from_handle when known, device (the number of the author's device
that sent a message; null when unknown), timestamp, text, conversation,
group, reply_to, status and attachments (file_name, content_type, size,
path).

Example:
  $ sotto receive
  $ sotto --json receive --follow | my-bot
`

func cmdReceive(a *app, args []string) error {
	fs := a.flags("receive", receiveHelp)
	timeout := fs.Duration("timeout", 5*time.Second, "")
	follow := fs.Bool("follow", false, "")
	if _, err := a.parse(fs, args, 0, 0); err != nil {
		return err
	}
	s, err := a.open(false)
	if err != nil {
		return err
	}
	defer s.Close()
	groups := a.groupIndex(s)
	for _, m := range a.takePending(s) {
		e := a.messageJSON(s, groups, "message", m)
		a.saveAttachments(a.ctx, s, m, &e)
		a.printEvent(e)
	}
	idle := time.NewTimer(*timeout)
	defer idle.Stop()
	connected := false
	var lastErr error
	received := false
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				return nil
			}
			if ce, ok := ev.(client.ConnectionEvent); ok {
				if ce.State == client.Connected || ce.State == client.Drained {
					connected = true
				}
				if ce.Err != nil {
					lastErr = ce.Err
				}
				continue
			}
			if me, ok := ev.(client.MessageEvent); ok {
				received = true
				e := a.messageJSON(s, groups, "message", me.Message)
				a.saveAttachments(a.ctx, s, me.Message, &e)
				a.printEvent(e)
			} else if e, ok := a.eventFor(s, groups, ev); ok {
				a.printEvent(e)
			}
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(*timeout)
		case <-idle.C:
			if *follow {
				idle.Reset(*timeout)
				continue
			}
			if !connected {
				msg := "could not connect to the relay"
				if lastErr != nil {
					msg += ": " + lastErr.Error()
				}
				return withHint(exitNetwork, lastErr, msg, "is the server reachable at "+s.cfg.Server+"?")
			}
			if received {
				// Give delivery receipts (batched for a moment) the
				// chance to go out now.
				a.settle(s, 2*time.Second)
			}
			return nil
		case <-a.ctx.Done():
			return nil
		}
	}
}

const historyHelp = `Usage: sotto history TO [--before T] [--after T] [--limit N]

Prints a conversation's history, oldest first. T is an RFC 3339 time
(2026-01-02T15:04:05Z) or a duration meaning that long ago (90m, 24h).
With --json it prints one object per message with the fields of "sotto
receive --json" (device among them).

Example:
  $ sotto history Bob --limit 20
  $ sotto --json history group:family --after 24h
`

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, usageError("bad time %q: RFC 3339 or a duration", s)
}

func cmdHistory(a *app, args []string) error {
	fs := a.flags("history", historyHelp)
	before := fs.String("before", "", "")
	after := fs.String("after", "", "")
	limit := fs.Int("limit", 50, "")
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	bt, err := parseWhen(*before)
	if err != nil {
		return err
	}
	at, err := parseWhen(*after)
	if err != nil {
		return err
	}
	if *limit <= 0 {
		return usageError("history: --limit must be positive")
	}
	s, err := a.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	t, err := a.resolve(s, pos[0], false)
	if err != nil {
		return err
	}
	var msgs []client.Message
	if !at.IsZero() {
		// HistorySince returns the newest first; page back to the
		// requested window.
		all, err := s.HistorySince(a.ctx, t.conv, at, 1<<20)
		if err != nil {
			return err
		}
		for _, m := range all {
			if bt.IsZero() || m.Sent.Before(bt) {
				msgs = append(msgs, m)
			}
		}
		if len(msgs) > *limit {
			msgs = msgs[len(msgs)-*limit:]
		}
	} else {
		msgs, err = s.History(a.ctx, t.conv, bt, *limit)
		if err != nil {
			return err
		}
	}
	a.printMessages(s, msgs)
	return nil
}

// printMessages prints newest-first messages oldest first.
func (a *app) printMessages(s *session, msgs []client.Message) {
	groups := a.groupIndex(s)
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		e := a.messageJSON(s, groups, "message", m)
		if a.json {
			a.printJSON(e)
			continue
		}
		who := "me"
		if !m.Outgoing {
			who = e.FromName
			if who == "" {
				who = atHandle(e.FromHandle)
			}
			if who == "" {
				who = e.From
			}
		}
		mark := ""
		if m.Outgoing {
			mark = " " + statusMark(m.Status)
		}
		text := m.Text
		if m.Deleted {
			text = "(deleted)"
		}
		fmt.Fprintf(a.stdout, "[%s] %s: %s%s\n", m.Sent.Local().Format("2006-01-02 15:04"), who, text, mark)
		for _, at := range m.Attachments {
			fmt.Fprintf(a.stdout, "  attachment %s (%d bytes)\n", at.FileName, at.Size)
		}
	}
}

func statusMark(st client.Status) string {
	switch st {
	case client.StatusPending:
		return "(pending)"
	case client.StatusSent:
		return "✓"
	case client.StatusDelivered:
		return "✓✓"
	case client.StatusRead:
		return "✓✓ read"
	}
	return ""
}

const searchHelp = `Usage: sotto search TEXT [--limit N]

Searches the decrypted history on this device (case-insensitive); nothing
leaves it. With --json it prints the messages as "history --json" does.

Example:
  $ sotto search "train ticket"
`

func cmdSearch(a *app, args []string) error {
	fs := a.flags("search", searchHelp)
	limit := fs.Int("limit", 50, "")
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	s, err := a.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	msgs, err := s.Search(a.ctx, pos[0], *limit)
	if err != nil {
		return err
	}
	a.printMessages(s, msgs)
	return nil
}

const groupsHelp = `Usage:
  sotto groups create NAME --member X [--member X...]
  sotto groups add NAME X...
  sotto groups remove NAME X...
  sotto groups leave NAME
  sotto groups rename NAME NEW
  sotto groups list
  sotto groups info NAME

X is @handle, a contact name or an account ID. NAME may also be the
group's hex ID. Changes are sent to the members at once.

Example:
  $ sotto groups create family --member @bob --member Carol
  $ sotto send group:family "dinner at eight"
`

func cmdGroups(a *app, args []string) error {
	fs := a.flags("groups", groupsHelp)
	var members stringList
	fs.Var(&members, "member", "")
	pos, err := a.parse(fs, args, 1, -1)
	if err != nil {
		return err
	}
	sub := pos[0]
	need := map[string][2]int{"create": {2, 2}, "add": {3, -1}, "remove": {3, -1}, "leave": {2, 2}, "rename": {3, 3}, "list": {1, 1}, "info": {2, 2}}
	n, ok := need[sub]
	if !ok {
		return usageError("groups: unknown subcommand %q", sub)
	}
	if len(pos) < n[0] || (n[1] >= 0 && len(pos) > n[1]) {
		return usageError("groups %s: wrong number of arguments (see \"sotto groups --help\")", sub)
	}
	if sub == "create" && len(members) == 0 {
		return usageError("groups create: at least one --member is required")
	}
	var s *session
	if sub == "list" || sub == "info" {
		s, err = a.open(true)
	} else {
		s, err = a.openOnline()
	}
	if err != nil {
		return err
	}
	defer s.Close()
	accounts := func(xs []string) ([]crypto.AccountID, error) {
		var out []crypto.AccountID
		for _, x := range xs {
			id, err := a.resolveAccount(s, x, true)
			if err != nil {
				return nil, err
			}
			if _, err := s.Contact(a.ctx, id); err != nil {
				return nil, withHint(exitNotFound, err, x+" is not a contact", "add it with \"sotto contacts add\"")
			}
			out = append(out, id)
		}
		return out, nil
	}
	switch sub {
	case "create":
		ids, err := accounts(members)
		if err != nil {
			return err
		}
		g, err := s.CreateGroup(a.ctx, pos[1], ids)
		if err != nil {
			return fmt.Errorf("creating group: %w", err)
		}
		a.settle(s, 10*time.Second)
		return a.printGroup(s, g)
	case "list":
		gs, err := s.Groups(a.ctx)
		if err != nil {
			return err
		}
		for _, g := range gs {
			if a.json {
				a.printJSON(a.groupJSON(s, g))
			} else {
				fmt.Fprintf(a.stdout, "%s  %-20s %d members\n", hex.EncodeToString(g.ID[:]), g.Name, len(g.Members))
			}
		}
		return nil
	}
	g, err := a.findGroup(s, pos[1])
	if err != nil {
		return err
	}
	switch sub {
	case "info":
		return a.printGroup(s, g)
	case "add", "remove":
		ids, err := accounts(pos[2:])
		if err != nil {
			return err
		}
		if sub == "add" {
			err = s.AddMembers(a.ctx, g.ID, ids...)
		} else {
			err = s.RemoveMembers(a.ctx, g.ID, ids...)
		}
		if err != nil {
			return fmt.Errorf("groups %s: %w", sub, err)
		}
	case "leave":
		if err := s.Leave(a.ctx, g.ID); err != nil {
			return fmt.Errorf("leaving: %w", err)
		}
	case "rename":
		if err := s.Rename(a.ctx, g.ID, pos[2]); err != nil {
			return fmt.Errorf("renaming: %w", err)
		}
	}
	a.settle(s, 10*time.Second)
	if sub == "leave" {
		if !a.json {
			fmt.Fprintf(a.stdout, "left %s\n", g.Name)
		}
		return nil
	}
	g, err = s.Group(a.ctx, g.ID)
	if err != nil {
		return err
	}
	return a.printGroup(s, g)
}

func (a *app) groupJSON(s *session, g client.Group) map[string]any {
	var ms []map[string]any
	for _, m := range g.Members {
		ms = append(ms, map[string]any{"account": m.Account.String(), "handle": s.cfg.Handles[m.Account.String()], "admin": m.Admin})
	}
	return map[string]any{"id": hex.EncodeToString(g.ID[:]), "name": g.Name, "revision": g.Revision, "members": ms}
}

func (a *app) printGroup(s *session, g client.Group) error {
	if a.json {
		return a.printJSON(a.groupJSON(s, g))
	}
	fmt.Fprintf(a.stdout, "group %s (%s), revision %d\n", g.Name, hex.EncodeToString(g.ID[:]), g.Revision)
	for _, m := range g.Members {
		label := m.Account.String()
		if m.Account == s.Account() {
			label += " (me)"
		} else if c, err := s.Contact(a.ctx, m.Account); err == nil {
			label += " " + a.contactLabel(s, c)
		}
		if m.Admin {
			label += " admin"
		}
		fmt.Fprintf(a.stdout, "  %s\n", label)
	}
	return nil
}

const verifyHelp = `Usage: sotto verify TO [--mark-verified]

Prints the safety number of this account and a contact as digits (the same
on both sides) and as a QR code (its payload in hex) for the other phone to
scan. Compare them out of band, then record it with --mark-verified.

Example:
  $ sotto verify Bob
  $ sotto verify Bob --mark-verified
`

func cmdVerify(a *app, args []string) error {
	fs := a.flags("verify", verifyHelp)
	mark := fs.Bool("mark-verified", false, "")
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	s, err := a.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	id, err := a.resolveAccount(s, pos[0], false)
	if err != nil {
		return err
	}
	sn, err := s.SafetyNumber(a.ctx, id)
	if err != nil {
		return fmt.Errorf("safety number: %w", err)
	}
	if *mark {
		if err := s.SetVerified(a.ctx, id, true); err != nil {
			return err
		}
	}
	c, _ := s.Contact(a.ctx, id)
	if a.json {
		return a.printJSON(map[string]any{"account": id.String(), "safety_number": sn.Digits(),
			"qr_payload": hex.EncodeToString(sn.QRPayload()), "verified": c.Verified})
	}
	fmt.Fprintf(a.stdout, "safety number with %s:\n%s\n", id, sn)
	if err := renderQR(a.stdout, hex.EncodeToString(sn.QRPayload())); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "verified: %s\n", strconv.FormatBool(c.Verified))
	return nil
}

const devicesHelp = `Usage: sotto devices list | sotto devices remove ID

Lists this account's devices (from its signed device list), or removes one
(only from the device that created the account, and not itself).

Example:
  $ sotto devices list
  $ sotto devices remove 2
`

func cmdDevices(a *app, args []string) error {
	fs := a.flags("devices", devicesHelp)
	pos, err := a.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	switch {
	case pos[0] == "list" && len(pos) == 1:
		s, err := a.openSpooling()
		if err != nil {
			return err
		}
		defer s.Close()
		devs, err := s.Devices(a.ctx)
		if err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		for _, d := range devs {
			if a.json {
				a.printJSON(map[string]any{"device": uint32(d.ID), "added": d.Added.UTC(), "this": d.ID == s.Device()})
				continue
			}
			this := ""
			if d.ID == s.Device() {
				this = " (this device)"
			}
			fmt.Fprintf(a.stdout, "device %d added %s%s\n", d.ID, d.Added.Local().Format(time.RFC3339), this)
		}
		return nil
	case pos[0] == "remove" && len(pos) == 2:
		n, err := strconv.ParseUint(pos[1], 10, 32)
		if err != nil || n == 0 {
			return usageError("devices remove: bad device ID %q", pos[1])
		}
		s, err := a.openSpooling()
		if err != nil {
			return err
		}
		defer s.Close()
		if err := s.RemoveDevice(a.ctx, crypto.DeviceID(n)); err != nil {
			return fmt.Errorf("removing device %d: %w", n, err)
		}
		if !a.json {
			fmt.Fprintf(a.stdout, "removed device %d\n", n)
		}
		return nil
	}
	return usageError("devices: expected \"list\" or \"remove ID\"")
}

const linkHelp = `Usage:
  sotto link --server URL [--trust-root TEXT]   (on the new device)
  sotto link --accept CODE                      (on the existing device)

On the new device (an empty home), "link" shows a link code as text and
waits (up to --timeout, default 10m) until the account's first device
accepts it; then this home holds a new device of that account. The trust
root is fetched or pinned as for "register". On the device that created
the account, "link --accept CODE" adds the device that shows CODE.

The code holds a one-time secret: show it only to yourself. It is shown as
text and as a QR code.

Example:
  new$ sotto --home ~/.sotto-laptop link --server https://sotto.example.org
  old$ sotto link --accept 'sotto-link:...'
`

func cmdLink(a *app, args []string) error {
	fs := a.flags("link", linkHelp)
	accept := fs.String("accept", "", "")
	server := fs.String("server", a.env["SOTTO_SERVER"], "")
	rootText := fs.String("trust-root", "", "")
	timeout := fs.Duration("timeout", 10*time.Minute, "")
	if _, err := a.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *accept != "" {
		s, err := a.openSpooling()
		if err != nil {
			return err
		}
		defer s.Close()
		id, err := s.LinkDevice(a.ctx, *accept)
		if err != nil {
			return fmt.Errorf("linking: %w", err)
		}
		if a.json {
			return a.printJSON(map[string]any{"device": uint32(id)})
		}
		fmt.Fprintf(a.stdout, "linked device %d\n", id)
		return nil
	}
	if *server == "" {
		return usageError("link: --server URL (on the new device) or --accept CODE (on the existing one) is required")
	}
	if err := a.checkEmptyHome("link into an empty --home"); err != nil {
		return err
	}
	cfg := &config{Server: strings.TrimRight(*server, "/")}
	c, _, _, err := a.newHome("link", cfg, *rootText, "New passphrase: ", func(opts client.Options) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(a.ctx, *timeout) // the wait for the code's acceptance
		defer cancel()
		c, err := client.Link(ctx, opts, func(code client.LinkCode) {
			if a.json {
				a.printJSON(map[string]any{"link_code": code.String()})
				return
			}
			fmt.Fprintf(a.stdout, "link code:\n%s\n", code)
			renderQR(a.stdout, code.String()) // the text above is the fallback
			fmt.Fprintf(a.stdout, "on your existing device run: sotto link --accept '%s'\nwaiting...\n", code)
		})
		if err != nil {
			return nil, fmt.Errorf("linking: %w", err)
		}
		return c, nil
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return a.printNewDevice(c, "linked: account")
}

const exportHelp = `Usage:
  sotto export FILE [--force]
  sotto import FILE --server URL [--trust-root TEXT]

"export" writes an encrypted backup of this device (account key if it
holds it, device keys, contacts, groups, history; not ratchet sessions,
which are set up afresh) to FILE, under the backup passphrase from
SOTTO_BACKUP_PASSPHRASE or a prompt. The file is as safe as that
passphrase. It refuses to overwrite FILE without --force.

"import" restores such a backup into an empty home (the store passphrase
from SOTTO_PASSPHRASE or a prompt); the server and trust root are given
as for "register". Use the restored device instead of the old one.

Example:
  $ sotto export ~/sotto-backup.age
  $ sotto --home ~/.sotto-restored import ~/sotto-backup.age --server https://sotto.example.org
`

func cmdExport(a *app, args []string) error {
	fs := a.flags("export", exportHelp)
	force := fs.Bool("force", false, "")
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if _, err := os.Stat(pos[0]); err == nil && !*force {
		return withHint(exitError, nil, pos[0]+" exists", "pass --force to overwrite it")
	}
	s, err := a.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	bp, err := a.passphrase("SOTTO_BACKUP_PASSPHRASE", "Backup passphrase: ", true)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(pos[0]), ".sotto-export-*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(f.Name())
	if err := s.Export(a.ctx, f, bp); err != nil {
		f.Close()
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(f.Name(), pos[0]); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if !a.json {
		fmt.Fprintf(a.stdout, "exported to %s\n", pos[0])
	}
	return nil
}

func cmdImport(a *app, args []string) error {
	fs := a.flags("import", exportHelp)
	server := fs.String("server", a.env["SOTTO_SERVER"], "")
	rootText := fs.String("trust-root", "", "")
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *server == "" {
		return usageError("import: --server URL is required")
	}
	if err := a.checkEmptyHome("import into an empty --home"); err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return withHint(exitNotFound, err, "import: "+err.Error())
	}
	defer f.Close()
	bp, err := a.passphrase("SOTTO_BACKUP_PASSPHRASE", "Backup passphrase: ", false)
	if err != nil {
		return err
	}
	cfg := &config{Server: strings.TrimRight(*server, "/")}
	c, _, _, err := a.newHome("import", cfg, *rootText, "New store passphrase: ", func(opts client.Options) (*client.Client, error) {
		c, err := client.Import(a.ctx, opts, f, bp)
		if errors.Is(err, crypto.ErrDecrypt) {
			return nil, withHint(exitError, err, "import: wrong backup passphrase or damaged file", "check SOTTO_BACKUP_PASSPHRASE")
		}
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		return c, nil
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return a.printNewDevice(c, "imported account")
}

// checkEmptyHome refuses to set up a home that holds an account already.
func (a *app) checkEmptyHome(hint string) error {
	if _, err := os.Stat(a.configPath()); err == nil {
		return withHint(exitError, client.ErrExists, "there is already an account in "+a.home, hint)
	}
	return nil
}

// newHome is what register, link and import share once the home is known
// to be empty: it asks for the new store passphrase (prompt), pins the
// trust root (rootText, or fetched from cfg.Server on this first use),
// runs create on the new store's options, and saves cfg with that root.
// A store that create left half made is removed.
func (a *app) newHome(cmd string, cfg *config, rootText, prompt string, create func(client.Options) (*client.Client, error)) (c *client.Client, root crypto.TrustRoot, fetched bool, err error) {
	pw, err := a.passphrase("SOTTO_PASSPHRASE", prompt, true)
	if err != nil {
		return nil, root, false, err
	}
	root, fetched, err = a.trustRoot(cmd, cfg.Server, rootText)
	if err != nil {
		return nil, root, false, err
	}
	if err := os.MkdirAll(a.home, 0o700); err != nil {
		return nil, root, false, fmt.Errorf("creating home: %w", err)
	}
	c, err = create(client.Options{
		Dir: a.storeDir(), Passphrase: pw, PebbleOptions: storeOptions(),
		KeyServerURL: cfg.Server, RelayURL: cfg.Server,
		TrustRoots: []crypto.TrustRoot{root},
	})
	if err != nil {
		os.RemoveAll(a.storeDir())
		return nil, root, false, err
	}
	cfg.TrustRoot, cfg.Handles = root.String(), map[string]string{}
	if err := a.saveConfig(cfg); err != nil {
		c.Close()
		return nil, root, false, err
	}
	return c, root, fetched, nil
}

// printNewDevice prints the account and device that link or import made
// (what: "linked: account" or "imported account").
func (a *app) printNewDevice(c *client.Client, what string) error {
	if a.json {
		return a.printJSON(map[string]any{"account": c.Account().String(), "device": uint32(c.Device())})
	}
	fmt.Fprintf(a.stdout, "%s %s device %d\n", what, c.Account(), c.Device())
	return nil
}

const passphraseHelp = `Usage: sotto passphrase change

Changes the store passphrase (only the wrapped store key is rewritten).
The current one comes from SOTTO_PASSPHRASE or a prompt, the new one from
SOTTO_NEW_PASSPHRASE or a prompt.

Example:
  $ sotto passphrase change
`

func cmdPassphrase(a *app, args []string) error {
	fs := a.flags("passphrase", passphraseHelp)
	pos, err := a.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if pos[0] != "change" {
		return usageError("passphrase: unknown subcommand %q", pos[0])
	}
	s, err := a.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	old := a.pw
	nw, err := a.passphrase("SOTTO_NEW_PASSPHRASE", "New passphrase: ", true)
	if err != nil {
		return err
	}
	if err := s.ChangePassphrase(old, nw); err != nil {
		return fmt.Errorf("changing passphrase: %w", err)
	}
	if !a.json {
		fmt.Fprintln(a.stdout, "passphrase changed")
	}
	return nil
}

// trustRoot returns the trust root a new home pins: the one given with
// --trust-root (text), else the one the server publishes, fetched on this
// first use (fetched reports which).
func (a *app) trustRoot(cmd, server, text string) (root crypto.TrustRoot, fetched bool, err error) {
	if text == "" {
		if text, err = a.fetchTrustRoot(server); err != nil {
			return crypto.TrustRoot{}, false, err
		}
		fetched = true
	}
	root, err = crypto.ParseTrustRoot(strings.TrimSpace(text))
	if err != nil {
		return crypto.TrustRoot{}, false, usageError("%s: --trust-root: %v", cmd, err)
	}
	return root, fetched, nil
}
