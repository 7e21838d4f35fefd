package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/internal/testbin"
)

// The binaries under test, built once by TestMain.
var sottoBin, sottodBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the tests that need the binaries skip
	}
	var err error
	// A low scrypt work factor for the test's stores (see storeOptions).
	ldflags := []string{"-ldflags", "-X main.testOnlyScryptLogN=10"}
	if sottoBin, err = testbin.Build("github.com/sotto-im/sotto/cmd/sotto", ldflags...); err == nil {
		sottodBin, err = testbin.Build(testbin.SottodPkg, ldflags...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		testbin.RemoveAll()
		os.Exit(1)
	}
	code := m.Run()
	testbin.RemoveAll()
	os.Exit(code)
}

// startServer runs a real sottod on a free port with a fresh data
// directory and returns its URL.
func startServer(t *testing.T) string {
	t.Helper()
	s, err := testbin.StartSottod(sottodBin, []string{"--listen", "127.0.0.1:0", "--data", t.TempDir(), "--log-level", "error"}, nil, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(10 * time.Second) })
	return s.URL
}

// home is one account's home directory, used through the real binary.
type home struct {
	t     *testing.T
	name  string
	dir   string
	extra []string // more environment
}

func newHome(t *testing.T, name string) *home {
	return &home{t: t, name: name, dir: filepath.Join(t.TempDir(), name)}
}

func (h *home) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOTTO_") {
			env = append(env, kv)
		}
	}
	env = append(env, "SOTTO_HOME="+h.dir, "SOTTO_PASSPHRASE=correct horse "+h.name)
	return append(env, h.extra...)
}

// run runs sotto with stdin (not a terminal) and returns its output and
// exit code.
func (h *home) run(stdin string, args ...string) (string, string, int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sottoBin, args...)
	cmd.Env = h.env()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("%s: sotto %v: %v", h.name, args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs sotto and fails the test unless it exits 0.
func (h *home) ok(args ...string) string {
	h.t.Helper()
	out, errs, code := h.run("", args...)
	if code != 0 {
		h.t.Fatalf("%s: sotto %v: exit %d\nstdout: %s\nstderr: %s", h.name, args, code, out, errs)
	}
	if strings.Contains(out, "\x1b") {
		h.t.Errorf("%s: sotto %v wrote escape sequences to a non-terminal: %q", h.name, args, out)
	}
	return out
}

// jsonLines parses one JSON object per line.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

// findMessage returns the received message with the given text.
func findMessage(t *testing.T, objs []map[string]any, text string) map[string]any {
	t.Helper()
	for _, o := range objs {
		if o["type"] == "message" && o["text"] == text {
			return o
		}
	}
	t.Fatalf("no message %q in %v", text, objs)
	return nil
}

// parallel runs fs concurrently (each opening a store costs scrypt).
func parallel(fs ...func()) {
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
}

// TestCLI drives three accounts through the real sotto binary against a
// real sottod: registration with handles, contacts, messages both ways, an
// attachment, a group of three, history and search, the exit codes, then
// the daemon and the chat view.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	url := startServer(t)
	alice, bob, carol := newHome(t, "alice"), newHome(t, "bob"), newHome(t, "carol")
	accounts := map[string]string{}
	var mu sync.Mutex
	register := func(h *home) func() {
		return func() {
			out := h.ok("--json", "register", "--server", url, "--handle", h.name)
			objs := jsonLines(t, out)
			if len(objs) != 1 || objs[0]["account"] == "" || objs[0]["handle"] != h.name {
				t.Errorf("register %s: %s", h.name, out)
				return
			}
			if fp, _ := objs[0]["trust_root_fingerprint"].(string); fp == "" {
				t.Errorf("register %s printed no trust root fingerprint: %s", h.name, out)
			}
			mu.Lock()
			accounts[h.name] = objs[0]["account"].(string)
			mu.Unlock()
		}
	}
	parallel(register(alice), register(bob), register(carol))
	if t.Failed() {
		t.FailNow()
	}

	parallel(
		func() {
			alice.ok("contacts", "add", "@bob", "--name", "Bob")
			alice.ok("contacts", "add", "@carol")
		},
		func() { bob.ok("contacts", "add", "@alice", "--name", "Alice") },
		func() { carol.ok("contacts", "add", "@alice") },
	)

	// Alice → Bob, with --json output of send.
	before := time.Now().Add(-time.Minute)
	out := alice.ok("--json", "send", "@bob", "hello bob")
	sent := jsonLines(t, out)
	if len(sent) != 1 || sent[0]["status"] != "sent" || len(sent[0]["id"].(string)) != 32 {
		t.Fatalf("send --json: %s", out)
	}
	firstID := sent[0]["id"].(string)

	// Bob receives it: every field checked.
	got := findMessage(t, jsonLines(t, bob.ok("--json", "receive", "--timeout", "3s")), "hello bob")
	if got["id"] != firstID {
		t.Errorf("id = %v, want %s", got["id"], firstID)
	}
	if got["from"] != accounts["alice"] {
		t.Errorf("from = %v, want %s", got["from"], accounts["alice"])
	}
	if got["from_handle"] != "alice" {
		t.Errorf("from_handle = %v, want alice", got["from_handle"])
	}
	wantDevice(t, "receive", got, 1) // alice's only device
	ts, err := time.Parse(time.RFC3339Nano, got["timestamp"].(string))
	if err != nil || ts.Before(before) || ts.After(time.Now().Add(time.Minute)) {
		t.Errorf("timestamp = %v (%v)", got["timestamp"], err)
	}
	if got["conversation"] == "" || got["status"] != "received" {
		t.Errorf("conversation/status = %v/%v", got["conversation"], got["status"])
	}
	if _, has := got["attachments"]; has {
		t.Errorf("unexpected attachments: %v", got["attachments"])
	}

	// Bob → Alice with an attachment, message text from stdin.
	payload := make([]byte, 200<<10)
	rand.Read(payload)
	file := filepath.Join(t.TempDir(), "photo.bin")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	if o, e, code := bob.run("here is the file\n", "send", "Alice", "--attach", file); code != 0 {
		t.Fatalf("send with attachment: exit %d: %s %s", code, o, e)
	}
	got = findMessage(t, jsonLines(t, alice.ok("--json", "receive", "--timeout", "3s")), "here is the file")
	if got["from"] != accounts["bob"] || got["from_handle"] != "bob" {
		t.Errorf("from = %v/%v", got["from"], got["from_handle"])
	}
	atts, _ := got["attachments"].([]any)
	if len(atts) != 1 {
		t.Fatalf("attachments = %v", got["attachments"])
	}
	at := atts[0].(map[string]any)
	if at["file_name"] != "photo.bin" || at["size"] != float64(len(payload)) {
		t.Errorf("attachment metadata = %v", at)
	}
	path, _ := at["path"].(string)
	if !strings.HasPrefix(path, filepath.Join(alice.dir, "attachments")) {
		t.Errorf("attachment path %q is not under the home's attachments directory", path)
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, payload) {
		t.Errorf("attachment on arrival differs from the file sent (%v)", err)
	}

	// A group of three.
	g := jsonLines(t, alice.ok("--json", "groups", "create", "trio", "--member", "@bob", "--member", "@carol"))
	if len(g) != 1 || g[0]["name"] != "trio" || len(g[0]["members"].([]any)) != 3 {
		t.Fatalf("groups create: %v", g)
	}
	alice.ok("send", "group:trio", "hello trio")
	parallel(
		func() {
			m := findMessage(t, jsonLines(t, bob.ok("--json", "receive", "--timeout", "3s")), "hello trio")
			if m["group"] != "trio" || m["from"] != accounts["alice"] {
				t.Errorf("bob: group message %v", m)
			}
		},
		func() {
			m := findMessage(t, jsonLines(t, carol.ok("--json", "receive", "--timeout", "3s")), "hello trio")
			if m["group"] != "trio" || m["from"] != accounts["alice"] {
				t.Errorf("carol: group message %v", m)
			}
		},
	)

	// History and the documented exit codes, on the same account.
	var aliceSN, bobSN map[string]any
	parallel(
		func() {
			h := jsonLines(t, alice.ok("--json", "history", "Bob"))
			// Every account here has one device, number 1; an outgoing
			// message names this device.
			wantDevice(t, "history, outgoing", findMessage(t, h, "hello bob"), 1)
			wantDevice(t, "history, incoming", findMessage(t, h, "here is the file"), 1)
			wantDevice(t, "search", findMessage(t, jsonLines(t, alice.ok("--json", "search", "HERE IS")), "here is the file"), 1)
			aliceSN = jsonLines(t, alice.ok("--json", "verify", "Bob"))[0]
		},
		func() { bobSN = jsonLines(t, bob.ok("--json", "verify", "@alice", "--mark-verified"))[0] },
		func() {
			if _, e, code := carol.run("", "send", "@nobodyhere", "x"); code != exitNotFound || !strings.Contains(e, "sotto: error: ") {
				t.Errorf("send to an unknown handle: exit %d, want %d; stderr %q", code, exitNotFound, e)
			}
		},
	)

	if sn, _ := aliceSN["safety_number"].(string); len(sn) != 60 || sn != bobSN["safety_number"] {
		t.Errorf("safety numbers differ or are malformed: %v / %v", aliceSN, bobSN)
	}
	if aliceSN["verified"] != false || bobSN["verified"] != true {
		t.Errorf("verified flags: alice %v, bob (marked) %v", aliceSN["verified"], bobSN["verified"])
	}

	// Carol is idle from here on: her backup and restore run beside the
	// daemon and chat tests.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); testExportImport(t, url, carol) }()
	t.Run("daemon", func(t *testing.T) { testDaemonAndChat(t, alice, bob, accounts) })
	wg.Wait()
}

// wantDevice checks a printed message's "device": present and a number.
func wantDevice(t *testing.T, where string, m map[string]any, want int) {
	t.Helper()
	if dev, present := m["device"]; !present || dev != float64(want) {
		t.Errorf("%s: device = %v (present %v), want %d", where, dev, present, want)
	}
}

// testExportImport backs carol's device up and restores it into a new
// home, whose history then holds the group message.
func testExportImport(t *testing.T, url string, carol *home) {
	file := filepath.Join(t.TempDir(), "carol.backup")
	restored := newHome(t, "carol2")
	carol.extra = []string{"SOTTO_BACKUP_PASSPHRASE=backup words"}
	restored.extra = carol.extra
	if o, e, code := carol.run("", "export", file); code != 0 {
		t.Errorf("export: exit %d: %s %s", code, o, e)
		return
	}
	if o, e, code := restored.run("", "import", file, "--server", url); code != 0 || !strings.Contains(o, "imported account") {
		t.Errorf("import: exit %d: %s %s", code, o, e)
		return
	}
	o, e, code := restored.run("", "--json", "history", "group:trio")
	if code != 0 || !strings.Contains(o, `"text":"hello trio"`) {
		t.Errorf("history after import: exit %d: %s %s", code, o, e)
	}
}

// rpcConn is a JSON-RPC client on the daemon's socket.
type rpcConn struct {
	t     *testing.T
	conn  net.Conn
	lines chan map[string]any
	next  int
}

func dialRPC(t *testing.T, path string) *rpcConn {
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rpcConn{t: t, conn: conn, lines: make(chan map[string]any, 100)}
	go func() {
		sc := bufio.NewScanner(conn)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				c.lines <- m
			}
		}
		close(c.lines)
	}()
	return c
}

// call sends a request and returns its response; notifications seen
// meanwhile are returned too.
func (c *rpcConn) call(method string, params any) (map[string]any, []map[string]any) {
	c.t.Helper()
	c.next++
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.next, "method": method, "params": params})
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		c.t.Fatal(err)
	}
	var notes []map[string]any
	timeout := time.After(90 * time.Second)
	for {
		m := c.read(timeout, "response to "+method)
		if m["id"] == float64(c.next) {
			return m, notes
		}
		notes = append(notes, m)
	}
}

// read returns the daemon's next line; it fails the test if the daemon
// closes the connection or nothing comes before timeout (what says what
// the test waits for).
func (c *rpcConn) read(timeout <-chan time.Time, what string) map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.lines:
		if !ok {
			c.t.Fatal("daemon closed the connection")
		}
		return m
	case <-timeout:
		c.t.Fatalf("no %s", what)
	}
	return nil
}

// waitNote waits for a "receive" notification of a message with text.
func (c *rpcConn) waitNote(text string, earlier []map[string]any) map[string]any {
	c.t.Helper()
	check := func(m map[string]any) map[string]any {
		if m["method"] != "receive" || m["jsonrpc"] != "2.0" {
			return nil
		}
		if p, _ := m["params"].(map[string]any); p["type"] == "message" && p["text"] == text {
			return p
		}
		return nil
	}
	for _, m := range earlier {
		if p := check(m); p != nil {
			return p
		}
	}
	timeout := time.After(90 * time.Second)
	for {
		if p := check(c.read(timeout, fmt.Sprintf("notification for %q", text))); p != nil {
			return p
		}
	}
}

// startDaemon runs "sotto daemon --socket" for h.
func startDaemon(t *testing.T, h *home) string {
	sock := filepath.Join(h.dir, "d.sock")
	runDaemon(t, h, "listening on unix:", "--socket", sock)
	return sock
}

// runDaemon runs "sotto daemon ARGS" for h and returns what follows
// ready in its first line of output.
func runDaemon(t *testing.T, h *home, ready string, args ...string) string {
	cmd := exec.Command(sottoBin, append([]string{"daemon"}, args...)...)
	cmd.Env = h.env()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	var rest string
	p, err := testbin.Start(cmd, 90*time.Second, func(line string) (ok bool, err error) {
		_, rest, ok = strings.Cut(line, ready)
		return ok, nil
	})
	if err != nil {
		t.Fatalf("daemon did not start: %v; stderr %s", err, errb.String())
	}
	t.Cleanup(func() {
		if err := p.Stop(20 * time.Second); err != nil {
			t.Errorf("daemon exit: %v; stderr %s", err, errb.String())
		}
	})
	return rest
}

func testDaemonAndChat(t *testing.T, alice, bob *home, accounts map[string]string) {
	sock := startDaemon(t, bob)
	rpc := dialRPC(t, sock)

	// Unknown method and bad params are JSON-RPC errors, not crashes.
	if resp, _ := rpc.call("no.such.method", nil); resp["error"].(map[string]any)["code"] != float64(-32601) {
		t.Errorf("unknown method: %v", resp)
	}
	resp, notes := rpc.call("send", map[string]any{"to": "@alice", "text": "via the daemon"})
	res, _ := resp["result"].(map[string]any)
	if res["status"] != "sent" || len(res["id"].(string)) != 32 {
		t.Fatalf("send through the daemon: %v", resp)
	}

	// Alice answers with the CLI; the daemon notifies at once.
	alice.ok("send", "@bob", "to the daemon")
	p := rpc.waitNote("to the daemon", notes)
	if p["from"] != accounts["alice"] || p["from_handle"] != "alice" {
		t.Errorf("notification: %v", p)
	}
	wantDevice(t, "daemon notification", p, 1)
	resp, _ = rpc.call("history", map[string]any{"to": "@alice", "limit": 10})
	var hist []map[string]any
	if res, _ := resp["result"].([]any); res != nil {
		for _, m := range res {
			if m, ok := m.(map[string]any); ok {
				hist = append(hist, m)
			}
		}
	}
	wantDevice(t, "daemon history, incoming", findMessage(t, hist, "to the daemon"), 1)
	wantDevice(t, "daemon history, outgoing", findMessage(t, hist, "via the daemon"), 1)

	t.Run("chat", func(t *testing.T) { testChat(t, alice, rpc) })
	t.Run("http", func(t *testing.T) { testDaemonHTTP(t, alice, rpc, accounts) })
	// With alice's daemon stopped, receive prints what it kept.
	findMessage(t, jsonLines(t, alice.ok("--json", "receive", "--timeout", "2s")), "while nobody listens")
}

// testDaemonHTTP runs alice's daemon over HTTP: POST /rpc answers, and a
// message from bob arrives on GET /events as a server-sent event.
func testDaemonHTTP(t *testing.T, alice *home, bob *rpcConn, accounts map[string]string) {
	base := runDaemon(t, alice, "listening on ", "--http", "127.0.0.1:0")
	resp, err := http.Post(base+"/rpc", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"whoami"}`))
	if err != nil {
		t.Fatal(err)
	}
	var who struct {
		Result map[string]any `json:"result"`
	}
	json.NewDecoder(resp.Body).Decode(&who)
	resp.Body.Close()
	if who.Result["account"] != accounts["alice"] {
		t.Errorf("whoami over HTTP: %v", who)
	}
	// Nobody is subscribed yet: the daemon keeps the message for the next
	// receive instead of dropping it.
	r, _ := bob.call("send", map[string]any{"to": "@alice", "text": "while nobody listens"})
	if r["error"] != nil {
		t.Fatalf("send: %v", r)
	}
	sentID, _ := r["result"].(map[string]any)["id"].(string)
	// Wait for this very message in the pending file (earlier commands may
	// have noted others there), before anyone subscribes.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(alice.dir, "pending")); sentID != "" && strings.Contains(string(b), sentID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not keep the message that arrived without subscribers")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ev, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Body.Close()
	if ct := ev.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(ev.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if <-lines != ": connected" {
		t.Fatal("no SSE preamble")
	}
	if r, _ := bob.call("send", map[string]any{"to": "@alice", "text": "over server-sent events"}); r["error"] != nil {
		t.Fatalf("send: %v", r)
	}
	timeout := time.After(90 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("event stream ended")
			}
			data, ok := strings.CutPrefix(l, "data: ")
			if !ok {
				continue
			}
			var n struct {
				Method string    `json:"method"`
				Params eventJSON `json:"params"`
			}
			if err := json.Unmarshal([]byte(data), &n); err != nil {
				t.Fatalf("SSE data %q: %v", data, err)
			}
			if n.Method == "receive" && n.Params.Type == "message" && n.Params.Text == "over server-sent events" {
				if n.Params.From != accounts["bob"] {
					t.Errorf("from %s", n.Params.From)
				}
				return
			}
		case <-timeout:
			t.Fatal("no server-sent event for the message")
		}
	}
}
