package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store/pebblestore"
	"github.com/sotto-im/sotto/crypto"
)

// Exit codes, documented in usage.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNetwork     = 3
	exitRateLimited = 4
	exitUntrusted   = 5
	exitNotFound    = 6
)

// cliError is an error with an exit code and hint lines.
type cliError struct {
	code  int
	msg   string
	hints []string
	err   error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &cliError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

func withHint(code int, err error, msg string, hints ...string) error {
	return &cliError{code: code, msg: msg, hints: hints, err: err}
}

// classify maps an error to an exit code and a hint.
func classify(err error) (int, []string) {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce.code, ce.hints
	}
	var untrusted *crypto.UntrustedIdentityError
	if errors.As(err, &untrusted) {
		return exitUntrusted, []string{"the contact's keys changed: compare safety numbers with \"sotto verify\""}
	}
	var api *client.APIError
	if errors.As(err, &api) {
		switch {
		case api.Status == http.StatusTooManyRequests:
			return exitRateLimited, []string{"wait a moment and try again"}
		case api.Status == http.StatusNotFound:
			return exitNotFound, nil
		case api.Status >= 500:
			return exitNetwork, nil
		}
		return exitError, nil
	}
	switch {
	case errors.Is(err, client.ErrNotFound), errors.Is(err, client.ErrUnknownContact),
		errors.Is(err, client.ErrUnknownConversation):
		return exitNotFound, nil
	case errors.Is(err, pebblestore.ErrWrongPassphrase):
		return exitError, []string{"check SOTTO_PASSPHRASE"}
	case errors.Is(err, client.ErrNotRegistered):
		return exitError, []string{"run \"sotto register --server URL\" first"}
	}
	var urlErr *url.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.As(err, &urlErr) {
		return exitNetwork, []string{"is the server reachable?"}
	}
	return exitError, nil
}

// app is one invocation's state.
type app struct {
	ctx    context.Context
	home   string
	json   bool
	env    map[string]string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	pw     []byte // the passphrase the store was opened with
}

// run is the whole program: main calls it with the process's arguments and
// streams, and tests call it in-process.
func run(ctx context.Context, args []string, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, env: map[string]string{}, stdin: stdin, stdout: stdout, stderr: stderr}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			a.env[k] = v
		}
	}
	err := a.main(args)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	code, hints := classify(err)
	fmt.Fprintf(stderr, "sotto: error: %v\n", err)
	for _, h := range hints {
		fmt.Fprintf(stderr, "sotto: hint: %s\n", h)
	}
	if code == exitUsage {
		fmt.Fprintf(stderr, "sotto: hint: run \"sotto --help\" for the usage\n")
	}
	return code
}

func (a *app) main(args []string) error {
	fs := flag.NewFlagSet("sotto", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.home, "home", "", "")
	fs.BoolVar(&a.json, "json", false, "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		return usageError("%v", err)
	}
	rest := fs.Args()
	if *help || (len(rest) > 0 && rest[0] == "help") {
		fmt.Fprint(a.stdout, usage)
		return nil
	}
	if len(rest) == 0 {
		fmt.Fprint(a.stderr, usage)
		return usageError("no command given")
	}
	if a.home == "" {
		a.home = a.env["SOTTO_HOME"]
	}
	if a.home == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return withHint(exitError, err, "cannot find a home directory: "+err.Error(), "pass --home DIR or set SOTTO_HOME")
		}
		a.home = filepath.Join(dir, "sotto")
	}
	if abs, err := filepath.Abs(a.home); err == nil {
		a.home = abs // printed paths (attachments) stay valid elsewhere
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		return usageError("unknown command %q", rest[0])
	}
	return cmd(a, rest[1:])
}

// command is one subcommand.
type command func(a *app, args []string) error

var commands map[string]command

func init() {
	commands = map[string]command{
		"register":   cmdRegister,
		"whoami":     cmdWhoami,
		"contacts":   cmdContacts,
		"send":       cmdSend,
		"receive":    cmdReceive,
		"history":    cmdHistory,
		"search":     cmdSearch,
		"groups":     cmdGroups,
		"verify":     cmdVerify,
		"devices":    cmdDevices,
		"link":       cmdLink,
		"passphrase": cmdPassphrase,
		"export":     cmdExport,
		"import":     cmdImport,
		"daemon":     cmdDaemon,
		"chat":       cmdChat,
	}
}

// flags builds a command's flag set: --help prints help (which holds the
// command's usage and examples) to stdout, and --json is accepted after the
// command too.
func (a *app) flags(name, help string) *flag.FlagSet {
	fs := flag.NewFlagSet("sotto "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&a.json, "json", a.json, "")
	fs.Usage = func() { fmt.Fprint(a.stdout, help) }
	return fs
}

// parse parses flags interspersed with positional arguments ("--" ends the
// flags) and checks the number of positional arguments.
func (a *app) parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.Usage()
				return nil, flag.ErrHelp
			}
			return nil, usageError("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		return nil, usageError("%s: wrong number of arguments (see \"%s --help\")", fs.Name(), fs.Name())
	}
	return pos, nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// config is what the CLI keeps beside the client's store: where the server
// is and which trust root was pinned. It holds no secrets.
type config struct {
	Server    string `json:"server"`
	TrustRoot string `json:"trust_root"`
	Handle    string `json:"handle,omitempty"`
	// Handles remembers the handles contacts were added by (account ID →
	// handle), for display; the client trusts account IDs only.
	Handles map[string]string `json:"handles,omitempty"`
}

func (a *app) configPath() string { return filepath.Join(a.home, "config.json") }
func (a *app) storeDir() string   { return filepath.Join(a.home, "store") }

func (a *app) loadConfig() (*config, error) {
	b, err := os.ReadFile(a.configPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, withHint(exitError, client.ErrNotRegistered, "no account in "+a.home,
			"run \"sotto register --server URL\" first, or pass --home DIR")
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	var c config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", a.configPath(), err)
	}
	if c.Handles == nil {
		c.Handles = map[string]string{}
	}
	return &c, nil
}

func (a *app) saveConfig(c *config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := a.configPath() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return os.Rename(tmp, a.configPath())
}

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// passphrase returns the store passphrase: SOTTO_PASSPHRASE, else a prompt
// without echo when stdin is a terminal, else an error (scripts must never
// hang on a prompt).
func (a *app) passphrase(envName, prompt string, confirm bool) ([]byte, error) {
	if p := a.env[envName]; p != "" {
		return []byte(p), nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, withHint(exitError, nil, "no passphrase: "+envName+" is not set and stdin is not a terminal",
			"set "+envName+" for scripts, or run sotto in a terminal to be asked")
	}
	read := func(p string) ([]byte, error) {
		fmt.Fprint(a.stderr, p)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		return b, err
	}
	p, err := read(prompt)
	if err != nil {
		return nil, fmt.Errorf("reading passphrase: %w", err)
	}
	if len(p) == 0 {
		return nil, usageError("empty passphrase")
	}
	if confirm {
		q, err := read("Confirm passphrase: ")
		if err != nil {
			return nil, fmt.Errorf("reading passphrase: %w", err)
		}
		if string(p) != string(q) {
			return nil, usageError("the passphrases do not match")
		}
	}
	return p, nil
}

// session is an open account.
type session struct {
	*client.Client
	cfg *config
}

// open opens the account. Offline clients do not connect to the relay, so
// commands that only read the local store never take messages that a
// "receive" should print.
func (a *app) open(offline bool) (*session, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	root, err := crypto.ParseTrustRoot(cfg.TrustRoot)
	if err != nil {
		return nil, fmt.Errorf("config: trust root: %w", err)
	}
	pw, err := a.passphrase("SOTTO_PASSPHRASE", "Passphrase: ", false)
	if err != nil {
		return nil, err
	}
	a.pw = pw
	c, err := client.Open(a.ctx, client.Options{
		Dir: a.storeDir(), Passphrase: pw, PebbleOptions: storeOptions(),
		KeyServerURL: cfg.Server, RelayURL: cfg.Server,
		TrustRoots: []crypto.TrustRoot{root},
		Offline:    offline,
	})
	if err != nil {
		if errors.Is(err, pebblestore.ErrWrongPassphrase) {
			return nil, withHint(exitError, err, "wrong passphrase", "check SOTTO_PASSPHRASE")
		}
		if errors.Is(err, syscall.EAGAIN) || strings.Contains(err.Error(), "lock") {
			return nil, withHint(exitError, err, "opening account: "+err.Error(),
				"is another sotto (a daemon or chat) using "+a.home+"? talk to the daemon over its socket instead")
		}
		return nil, fmt.Errorf("opening account: %w", err)
	}
	return &session{Client: c, cfg: cfg}, nil
}

// openSpooling opens the account online for a command that does not print
// events: messages that arrive meanwhile are noted for the next receive.
func (a *app) openSpooling() (*session, error) {
	s, err := a.openOnline()
	if err != nil {
		return nil, err
	}
	go func() {
		for ev := range s.Events() {
			a.handleOther(ev)
		}
	}()
	return s, nil
}

// openOnline opens the account and waits until it is connected: the
// client logs in to the key server only when it connects to the relay, so
// key server calls (handles, device lists) fail before that.
func (a *app) openOnline() (*session, error) {
	s, err := a.open(false)
	if err != nil {
		return nil, err
	}
	lastErr, err := a.await(s, 30*time.Second, func(ev client.Event) bool {
		ce, ok := ev.(client.ConnectionEvent)
		return ok && (ce.State == client.Connected || ce.State == client.Drained)
	})
	if err == nil {
		return s, nil
	}
	s.Close()
	if !errors.Is(err, errWaitTimedOut) {
		return nil, err
	}
	msg := "could not connect to " + s.cfg.Server
	if lastErr != nil {
		msg += ": " + lastErr.Error()
	}
	code, hints := classify(lastErr)
	if code == exitError || lastErr == nil {
		code = exitNetwork
	}
	return nil, withHint(code, lastErr, msg, append(hints, "is the server reachable?")...)
}

// openOnlineTo opens the account online for a command that talks to TO,
// and resolves TO (adding an @handle that is not a contact yet).
func (a *app) openOnlineTo(to string) (*session, target, error) {
	s, err := a.openOnline()
	if err != nil {
		return nil, target{}, err
	}
	t, err := a.resolve(s, to, true)
	if err != nil {
		s.Close()
		return nil, target{}, err
	}
	return s, t, nil
}

// printJSON writes one JSON object on one line.
func (a *app) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}

// testOnlyScryptLogN, when set at link time (go build -ldflags
// "-X main.testOnlyScryptLogN=10"), lowers the work factor that wraps a new
// store key, so that the CLI's tests do not spend a second of scrypt on every
// command. Release builds leave it empty: the crypto package's default.
var testOnlyScryptLogN string

// storeOptions returns the encrypted store's options.
func storeOptions() *pebblestore.Options {
	if testOnlyScryptLogN == "" {
		return nil
	}
	logN, err := strconv.Atoi(testOnlyScryptLogN)
	if err != nil {
		panic("sotto: testOnlyScryptLogN is not a number")
	}
	return &pebblestore.Options{ScryptLogN: logN}
}
