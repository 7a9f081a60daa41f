// The reconnect storm's load client: S Chat streams over C mTLS connections, in Go.
//
// benchmarks/paths.py runs it twice around a server restart:
//
//	storm -mode join   ... -ids FILE   every stream joins room "storm", posts "joined"
//	                                   to a room of its own and writes the id of that
//	                                   echo to FILE (one line per stream)
//	storm -mode rejoin ... -ids FILE   every stream at once reopens Chat with
//	                                   last-event-id from FILE and does what a
//	                                   securechat client does on reconnect
//
// A rejoining stream behaves as securechat's client does (client/reconnect.py):
// it opens ChatBatched (-method Chat: Chat) with `last-event-id`, writes its JOIN, and when the call is
// refused OUT_OF_RANGE with reason `history-gone` and `securechat-resume-from`
// in trailing metadata, it opens again from that id. It is back when the echo of
// a message it then posts to its own room arrives: the server handles a stream's
// messages in order, so the echo proves the join was handled. UNAVAILABLE and
// RESOURCE_EXHAUSTED are retried after a short backoff; any other status ends the
// stream's attempt and is counted (CANCELLED, the shedding the storm looks for,
// among them). A stream that is back stays open, as a client's would, until every
// stream is back (or failed); then all close.
//
// Prints one JSON object on stdout: per-outcome counts, the seconds from the
// start of the mode until each stream was back (sorted), and this process's CPU.
//
// Built by benchmarks/gofanout.py (GOPATH mode, Debian's Go packages).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "securechat/v1/chatpb"
)

const (
	lastEventID = "last-event-id"
	refusalKey  = "securechat-refusal"
	resumeKey   = "securechat-resume-from"
	historyGone = "history-gone"
	attempts    = 8 // one refusal with the new run's resume point, then retries of UNAVAILABLE and the like
)

// Status code names as gRPC's other languages (and benchmarks/paths.py) spell them.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

type report struct {
	Mode       string         `json:"mode"`
	Streams    int            `json:"streams"`
	Done       int            `json:"done"`
	Outcomes   map[string]int `json:"outcomes"`
	Seconds    []float64      `json:"seconds"`
	CPUSeconds float64        `json:"cpu_seconds"`
	Elapsed    float64        `json:"elapsed"`
	Failures   []string       `json:"failures,omitempty"`
}

type counter struct {
	mu       sync.Mutex
	outcomes map[string]int
	seconds  []float64
	failures []string
}

func (c *counter) count(code string) {
	c.mu.Lock()
	c.outcomes[code]++
	c.mu.Unlock()
}

func (c *counter) done(at float64) {
	c.mu.Lock()
	c.seconds = append(c.seconds, at)
	c.mu.Unlock()
}

func (c *counter) fail(what string) {
	c.mu.Lock()
	if len(c.failures) < 10 {
		c.failures = append(c.failures, what)
	}
	c.mu.Unlock()
}

func dial(target, serverName string, pool *x509.CertPool, clients string, index int) *grpc.ClientConn {
	pair, err := tls.LoadX509KeyPair(
		filepath.Join(clients, fmt.Sprintf("c%d.pem", index)), filepath.Join(clients, fmt.Sprintf("c%d-key.pem", index)),
	)
	if err != nil {
		log.Fatalf("storm: client certificate %d in %s: %v", index, clients, err)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: serverName})
	// Non-blocking: the connection is made on the first call, as every other connection's is, at once.
	conn, err := grpc.Dial(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Fatalf("storm: dial %s: %v", target, err)
	}
	return conn
}

// enter opens one stream (resuming after RESUME when it is not empty), joins "storm",
// posts TEXT to room OWN and waits for its echo. It returns the echo's id and the
// stream's cancel (the stream stays open: a client that is back stays), or the status
// the call ended with and its trailing metadata.
func enter(ctx context.Context, client pb.ChatServiceClient, batched bool, resume, own, text string) (string, context.CancelFunc, *status.Status, metadata.MD) {
	ctx, cancel := context.WithCancel(ctx)
	if resume != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, lastEventID, resume)
	}
	var (
		send    func(*pb.ChatMessage) error
		recv    func() ([]*pb.ChatEvent, error)
		trailer func() metadata.MD
	)
	if batched { // as securechat's client does: ChatBatched, Chat only on a server without it
		stream, err := client.ChatBatched(ctx, grpc.WaitForReady(true))
		if err != nil {
			cancel()
			return "", nil, status.Convert(err), nil
		}
		send, trailer = stream.Send, stream.Trailer
		recv = func() ([]*pb.ChatEvent, error) {
			batch, err := stream.Recv()
			return batch.GetEvents(), err
		}
	} else {
		stream, err := client.Chat(ctx, grpc.WaitForReady(true))
		if err != nil {
			cancel()
			return "", nil, status.Convert(err), nil
		}
		send, trailer = stream.Send, stream.Trailer
		recv = func() ([]*pb.ChatEvent, error) {
			event, err := stream.Recv()
			return []*pb.ChatEvent{event}, err
		}
	}
	// A Send to a call the server has ended returns io.EOF; Recv then gives its status.
	_ = send(&pb.ChatMessage{Room: "storm"})
	_ = send(&pb.ChatMessage{Room: own, Text: text})
	for {
		events, err := recv()
		if err != nil {
			cancel()
			return "", nil, status.Convert(err), trailer()
		}
		for _, event := range events {
			if event.GetKind() == pb.ChatEvent_MESSAGE && event.GetText() == text && event.GetRoom() == own {
				return event.GetId(), cancel, nil, nil
			}
		}
	}
}

func run(mode string, batched bool, conns []*grpc.ClientConn, resume []string, timeout time.Duration) (report, []string) {
	streams := len(resume)
	ids := make([]string, streams)
	c := &counter{outcomes: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	text := "joined"
	if mode == "rejoin" {
		text = "back"
	}
	release := make(chan struct{}) // closed once every stream is back: until then those back stay open
	var back, closed sync.WaitGroup
	started := time.Now()
	for i := 0; i < streams; i++ {
		back.Add(1)
		closed.Add(1)
		go func(i int) {
			defer closed.Done()
			client := pb.NewChatServiceClient(conns[i%len(conns)])
			point, own, wait := resume[i], fmt.Sprintf("s%d", i), 50*time.Millisecond
			for attempt := 0; attempt < attempts; attempt++ {
				id, end, st, trailer := enter(ctx, client, batched, point, own, text)
				if st == nil {
					ids[i] = id
					c.done(time.Since(started).Seconds())
					back.Done()
					<-release
					end()
					return
				}
				c.count(codeNames[st.Code()])
				if st.Code() == codes.OutOfRange && first(trailer, refusalKey) == historyGone && first(trailer, resumeKey) != "" {
					point = first(trailer, resumeKey) // the new run's resume point: nothing of it is missed
					continue
				}
				if (st.Code() == codes.Unavailable || st.Code() == codes.ResourceExhausted) && ctx.Err() == nil {
					time.Sleep(wait)
					wait *= 2
					continue
				}
				c.fail(fmt.Sprintf("stream %d: %s: %s (%s=%q)", i, st.Code(), st.Message(), refusalKey, first(trailer, refusalKey)))
				back.Done()
				return
			}
			c.fail(fmt.Sprintf("stream %d: not back after %d attempts", i, attempts))
			back.Done()
		}(i)
	}
	back.Wait()
	elapsed := time.Since(started).Seconds()
	close(release)
	closed.Wait()
	sort.Float64s(c.seconds)
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
	return report{
		Mode: mode, Streams: streams, Done: len(c.seconds), Outcomes: c.outcomes, Seconds: c.seconds,
		CPUSeconds: cpu, Elapsed: elapsed, Failures: c.failures,
	}, ids
}

func first(md metadata.MD, key string) string {
	if values := md.Get(key); len(values) > 0 {
		return values[0]
	}
	return ""
}

func main() {
	mode := flag.String("mode", "join", "join (first connect, writes -ids) or rejoin (reconnect with the ids of -ids)")
	target := flag.String("target", "", "HOST:PORT of the server")
	serverName := flag.String("server-name", "localhost", "name the server certificate must carry")
	caFile := flag.String("ca", "", "CA certificate (PEM)")
	clients := flag.String("clients", "", "directory of cN.pem / cN-key.pem client certificates, one per connection")
	connections := flag.Int("connections", 1000, "connections (each with its own client certificate)")
	streams := flag.Int("streams", 10000, "Chat streams, spread over the connections")
	idsFile := flag.String("ids", "", "file of last event ids, one per stream")
	timeout := flag.Duration("timeout", 300*time.Second, "give up after this long")
	method := flag.String("method", "ChatBatched", "ChatBatched (what securechat's client opens) or Chat")
	flag.Parse()
	caPEM, err := ioutil.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("storm: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatalf("storm: %s: no certificate found", *caFile)
	}
	resume := make([]string, *streams)
	if *mode == "rejoin" {
		file, err := os.Open(*idsFile)
		if err != nil {
			log.Fatalf("storm: %v", err)
		}
		lines := bufio.NewScanner(file)
		for i := 0; i < *streams && lines.Scan(); i++ {
			resume[i] = strings.TrimSpace(lines.Text())
		}
		file.Close()
	} else if *mode != "join" {
		log.Fatalf("storm: -mode %q: use join or rejoin", *mode)
	}
	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		conns[i] = dial(*target, *serverName, pool, *clients, i)
	}
	if *method != "ChatBatched" && *method != "Chat" {
		log.Fatalf("storm: -method %q: use ChatBatched or Chat", *method)
	}
	result, ids := run(*mode, *method == "ChatBatched", conns, resume, *timeout)
	for _, conn := range conns {
		conn.Close()
	}
	if *mode == "join" {
		if err := ioutil.WriteFile(*idsFile, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
			log.Fatalf("storm: %v", err)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		log.Fatalf("storm: %v", err)
	}
}
