package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/crypto"
)

const daemonHelp = `Usage: sotto daemon [--socket PATH | --http ADDR]

Keeps the account connected (so messages arrive and prekeys are refilled
without a manual receive) and serves JSON-RPC 2.0:

  --socket PATH  newline-delimited JSON over a Unix socket (default
                 <home>/sotto.sock); every connection also gets incoming
                 messages and events as notifications
  --http ADDR    POST /rpc (one request per POST) and GET /events
                 (server-sent events, one "receive" notification each)

The address is printed on stdout once listening.

Methods (params as JSON objects):
  send          {"to", "text", "attachments": [PATH...], "reply_to"} -> {"id", "status"}
  react         {"to", "target", "emoji"}
  edit          {"to", "target", "text"}
  delete        {"to", "target"}
  typing        {"to", "typing": bool}
  read          {"to", "ids": [MSGID...]}
  history       {"to", "limit"} -> [message...]
  search        {"text", "limit"} -> [message...]
  contacts.list, contacts.add {"link" | "handle", "name"}
  groups.list, groups.create {"name", "members": [X...]}
  whoami
Incoming messages and events arrive as
  {"jsonrpc":"2.0","method":"receive","params":{...}}
with the fields of "sotto --json receive". Errors carry the exit code of
the matching command in error.data.exit_code.

Example:
  $ sotto daemon --socket /tmp/sotto.sock &
  $ echo '{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"@bob","text":"hi"}}' | nc -U /tmp/sotto.sock
  $ sotto daemon --http 127.0.0.1:7583 &
  $ curl -N http://127.0.0.1:7583/events
`

type daemon struct {
	a      *app
	s      *session
	mu     sync.Mutex // guards groups, subs, waiters and the config
	groups convNames
	subs   map[chan []byte]struct{}
	// waiters wait for the relay to accept a sent message.
	waiters map[client.MessageID]chan client.Status
}

func cmdDaemon(a *app, args []string) error {
	fs := a.flags("daemon", daemonHelp)
	sock := fs.String("socket", "", "")
	httpAddr := fs.String("http", "", "")
	if _, err := a.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *sock != "" && *httpAddr != "" {
		return usageError("daemon: --socket and --http exclude each other")
	}
	if *sock == "" && *httpAddr == "" {
		*sock = a.home + "/sotto.sock"
	}
	s, err := a.openOnline()
	if err != nil {
		return err
	}
	defer s.Close()
	d := &daemon{a: a, s: s, groups: a.groupIndex(s), subs: map[chan []byte]struct{}{},
		waiters: map[client.MessageID]chan client.Status{}}
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	go d.events(ctx)

	if *sock != "" {
		if st, err := os.Stat(*sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(*sock) // a stale socket of a previous run
		}
		ln, err := net.Listen("unix", *sock)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		defer os.Remove(*sock)
		os.Chmod(*sock, 0o600)
		fmt.Fprintf(a.stdout, "sotto daemon listening on unix:%s\n", *sock)
		go func() { <-ctx.Done(); ln.Close() }()
		for {
			conn, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("daemon: %w", err)
			}
			go d.serveConn(ctx, conn)
		}
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc", d.handleRPC)
	mux.HandleFunc("GET /events", d.handleEvents)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(a.stdout, "sotto daemon listening on http://%s\n", ln.Addr())
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// events reads the client's events for as long as the daemon runs and
// turns them into notifications.
func (d *daemon) events(ctx context.Context) {
	for ev := range d.s.Events() {
		switch ev := ev.(type) {
		case client.UpdateEvent:
			d.mu.Lock()
			if w, ok := d.waiters[ev.Message.ID]; ok && ev.Message.Status >= client.StatusSent && ev.Message.Status != client.StatusReceived {
				w <- ev.Message.Status
				delete(d.waiters, ev.Message.ID)
			}
			d.mu.Unlock()
		case client.ConnectionEvent:
			continue
		}
		d.mu.Lock()
		e, ok := d.a.eventFor(d.s, d.groups, ev)
		d.mu.Unlock()
		if !ok {
			continue
		}
		if me, ok := ev.(client.MessageEvent); ok {
			d.a.saveAttachments(ctx, d.s, me.Message, &e)
		}
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "receive", "params": e})
		d.mu.Lock()
		n := len(d.subs)
		for ch := range d.subs {
			select {
			case ch <- b:
			default:
				// A subscriber that does not keep up is dropped rather
				// than stalling every other one; the message is in the
				// history.
				delete(d.subs, ch)
				close(ch)
			}
		}
		d.mu.Unlock()
		if me, ok := ev.(client.MessageEvent); ok && n == 0 {
			d.a.spool(me.Message) // nobody listening: the next receive prints it
		}
	}
}

func (d *daemon) subscribe() chan []byte {
	ch := make(chan []byte, 1024)
	d.mu.Lock()
	d.subs[ch] = struct{}{}
	d.mu.Unlock()
	return ch
}

func (d *daemon) unsubscribe(ch chan []byte) {
	d.mu.Lock()
	if _, ok := d.subs[ch]; ok {
		delete(d.subs, ch)
		close(ch)
	}
	d.mu.Unlock()
}

type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

type rpcError struct {
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data,omitempty"`
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// parseRequest decodes one JSON-RPC request (untrusted bytes from any
// local client); a nil error means it may be dispatched.
func parseRequest(line []byte) (rpcRequest, *rpcError) {
	var req rpcRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return req, &rpcError{Code: -32700, Message: "parse error"}
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		return req, &rpcError{Code: -32600, Message: "invalid request"}
	}
	if len(req.Params) > 0 && req.Params[0] != '{' && string(req.Params) != "null" {
		return req, &rpcError{Code: -32602, Message: "invalid params: params must be an object"}
	}
	return req, nil
}

// call handles one request line; it returns nil for a notification.
func (d *daemon) call(ctx context.Context, line []byte) []byte {
	resp := rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null")}
	req, perr := parseRequest(line)
	if req.ID != nil {
		resp.ID = req.ID
	}
	if perr != nil {
		resp.Error = perr
	} else {
		res, err := d.dispatch(ctx, req.Method, req.Params)
		if req.ID == nil {
			return nil
		}
		if err != nil {
			resp.Error = rpcErrorFor(err)
		} else {
			if res == nil {
				res = map[string]any{}
			}
			resp.Result = res
		}
	}
	b, _ := json.Marshal(resp)
	return b
}

var errMethod = errors.New("method not found")

type paramsError struct{ err error }

func (e paramsError) Error() string { return "invalid params: " + e.err.Error() }

func rpcErrorFor(err error) *rpcError {
	if errors.Is(err, errMethod) {
		return &rpcError{Code: -32601, Message: err.Error()}
	}
	var pe paramsError
	if errors.As(err, &pe) {
		return &rpcError{Code: -32602, Message: err.Error()}
	}
	code, hints := classify(err)
	data := map[string]any{"exit_code": code}
	if len(hints) > 0 {
		data["hints"] = hints
	}
	return &rpcError{Code: -32000, Message: err.Error(), Data: data}
}

type rpcParams struct {
	To          string   `json:"to"`
	Text        string   `json:"text"`
	Attachments []string `json:"attachments"`
	ReplyTo     string   `json:"reply_to"`
	Target      string   `json:"target"`
	Emoji       string   `json:"emoji"`
	Typing      bool     `json:"typing"`
	IDs         []string `json:"ids"`
	Limit       int      `json:"limit"`
	Link        string   `json:"link"`
	Handle      string   `json:"handle"`
	Name        string   `json:"name"`
	Members     []string `json:"members"`
}

func (d *daemon) dispatch(ctx context.Context, method string, raw json.RawMessage) (any, error) {
	var p rpcParams
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, paramsError{err}
		}
	}
	s, a := d.s, d.a
	resolve := func() (target, error) {
		if p.To == "" {
			return target{}, paramsError{errors.New(`"to" is required`)}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return a.resolve(s, p.To, true)
	}
	msgIDParam := func(x string) (client.MessageID, error) {
		id, err := parseMessageID(x)
		if err != nil {
			return id, paramsError{err}
		}
		return id, nil
	}
	switch method {
	case "whoami":
		return map[string]any{"account": s.Account().String(), "device": uint32(s.Device()),
			"handle": s.cfg.Handle, "invite": s.Invite(false).String()}, nil
	case "send":
		t, err := resolve()
		if err != nil {
			return nil, err
		}
		dr := client.Text(p.Text)
		if p.ReplyTo != "" {
			id, err := msgIDParam(p.ReplyTo)
			if err != nil {
				return nil, err
			}
			dr = dr.ReplyTo(id)
		}
		for _, f := range p.Attachments {
			at, err := a.upload(s, f)
			if err != nil {
				return nil, err
			}
			dr = dr.WithAttachment(at)
		}
		// Register the waiter before sending so the acceptance cannot be
		// missed; the ID is known only after Send, so hold the lock.
		w := make(chan client.Status, 1)
		d.mu.Lock()
		id, err := s.Send(ctx, t.conv, dr)
		if err == nil {
			d.waiters[id] = w
		}
		d.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case st := <-w:
			return map[string]any{"id": msgID(id), "status": st.String()}, nil
		case <-time.After(60 * time.Second):
			d.mu.Lock()
			delete(d.waiters, id)
			d.mu.Unlock()
			if st, ok := a.statusOf(s, t.conv, id); ok && st >= client.StatusSent {
				return map[string]any{"id": msgID(id), "status": st.String()}, nil
			}
			return map[string]any{"id": msgID(id), "status": client.StatusPending.String()}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "react", "edit", "delete":
		t, err := resolve()
		if err != nil {
			return nil, err
		}
		id, err := msgIDParam(p.Target)
		if err != nil {
			return nil, err
		}
		switch method {
		case "react":
			err = s.React(ctx, t.conv, id, p.Emoji)
		case "edit":
			err = s.Edit(ctx, t.conv, id, p.Text)
		default:
			err = s.Delete(ctx, t.conv, id)
		}
		return nil, err
	case "typing":
		t, err := resolve()
		if err != nil {
			return nil, err
		}
		return nil, s.SetTyping(ctx, t.conv, p.Typing)
	case "read":
		t, err := resolve()
		if err != nil {
			return nil, err
		}
		var ids []client.MessageID
		for _, x := range p.IDs {
			id, err := msgIDParam(x)
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		return nil, s.MarkRead(ctx, t.conv, ids...)
	case "history", "search":
		var msgs []client.Message
		var err error
		limit := p.Limit
		if limit <= 0 {
			limit = 50
		}
		if method == "history" {
			t, rerr := resolve()
			if rerr != nil {
				return nil, rerr
			}
			msgs, err = s.History(ctx, t.conv, time.Time{}, limit)
		} else {
			msgs, err = s.Search(ctx, p.Text, limit)
		}
		if err != nil {
			return nil, err
		}
		out := []eventJSON{}
		d.mu.Lock()
		for i := len(msgs) - 1; i >= 0; i-- {
			out = append(out, a.messageJSON(s, d.groups, "message", msgs[i]))
		}
		d.mu.Unlock()
		return out, nil
	case "contacts.list":
		cs, err := s.Contacts(ctx)
		if err != nil {
			return nil, err
		}
		out := []map[string]any{}
		d.mu.Lock()
		for _, c := range cs {
			out = append(out, a.contactJSON(s, c))
		}
		d.mu.Unlock()
		return out, nil
	case "contacts.add":
		var c client.Contact
		var err error
		d.mu.Lock()
		defer d.mu.Unlock()
		switch {
		case p.Handle != "":
			h := strings.TrimPrefix(p.Handle, "@")
			c, err = s.AddContactByHandle(ctx, h)
			if err == nil {
				s.cfg.Handles[c.Account.String()] = h
				err = a.saveConfig(s.cfg)
			}
		case p.Link != "":
			c, err = s.AddContact(ctx, p.Link)
		default:
			return nil, paramsError{errors.New(`"link" or "handle" is required`)}
		}
		if err == nil && p.Name != "" {
			err = s.SetContactName(ctx, c.Account, p.Name)
			c.Name = p.Name
		}
		if err != nil {
			return nil, err
		}
		return a.contactJSON(s, c), nil
	case "groups.list":
		gs, err := s.Groups(ctx)
		if err != nil {
			return nil, err
		}
		out := []map[string]any{}
		d.mu.Lock()
		for _, g := range gs {
			out = append(out, a.groupJSON(s, g))
		}
		d.mu.Unlock()
		return out, nil
	case "groups.create":
		if p.Name == "" || len(p.Members) == 0 {
			return nil, paramsError{errors.New(`"name" and "members" are required`)}
		}
		d.mu.Lock()
		var accts []crypto.AccountID
		for _, m := range p.Members {
			id, err := a.resolveAccount(s, m, true)
			if err != nil {
				d.mu.Unlock()
				return nil, err
			}
			accts = append(accts, id)
		}
		d.mu.Unlock()
		g, err := s.CreateGroup(ctx, p.Name, accts)
		if err != nil {
			return nil, err
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.groups[g.Conversation] = g
		return a.groupJSON(s, g), nil
	}
	return nil, fmt.Errorf("%w: %s", errMethod, method)
}

// serveConn serves newline-delimited JSON-RPC on one socket connection and
// writes notifications to it.
func (d *daemon) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	out := make(chan []byte, 64)
	notes := d.subscribe()
	defer d.unsubscribe(notes)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := bufio.NewWriter(conn)
		for {
			var b []byte
			var ok bool
			select {
			case b, ok = <-out:
			case b, ok = <-notes:
			case <-ctx.Done():
				return
			}
			if !ok {
				return
			}
			w.Write(b)
			w.WriteByte('\n')
			if w.Flush() != nil {
				return
			}
		}
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var wg sync.WaitGroup
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := d.call(ctx, line); resp != nil {
				select {
				case out <- resp:
				case <-done:
				}
			}
		}()
	}
	wg.Wait()
}

func (d *daemon) handleRPC(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	resp := d.call(r.Context(), body)
	w.Header().Set("Content-Type", "application/json")
	if resp == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Write(append(resp, '\n'))
}

func (d *daemon) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": connected\n\n")
	fl.Flush()
	notes := d.subscribe()
	defer d.unsubscribe(notes)
	keepalive := time.NewTicker(30 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case b, ok := <-notes:
			if !ok {
				return
			}
			fmt.Fprintf(w, "event: receive\ndata: %s\n\n", b)
			fl.Flush()
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		case <-r.Context().Done():
			return
		}
	}
}
