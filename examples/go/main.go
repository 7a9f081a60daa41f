// securechat-example: a Go client of the securechat wire API, with nothing
// from securechat itself -- only the certificates `securechat quickstart`
// writes and protos/securechat/v1/chat.proto. It is what another team's Go
// service would write. Build and run: see README.md beside this file.
//
// It prints one line per step, the same lines as the Node and Python
// examples, so a test can compare the three:
//
//	hello: Hello, alice!
//	whoami: name=alice serial=... not_after=...
//	chat: joined room=R
//	chat: echo id=N sender=alice client_msg_id=C text=...
//	chat: other id=N sender=bob text=...
//	resume: last-event-id=N replayed id=M sender=bob text=...
//	retry: client_msg_id=C id=N first_id=N same_event=true
//	refusal: code=INVALID_ARGUMENT reason=invalid-room action=fix-the-request message=...
//	no-client-cert: code=UNAVAILABLE
//	done
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "securechat-example/chatpb"
)

// The trailing-metadata key that carries a refusal's machine-readable
// reason. Clients act on it, never on the human message.
const refusalKey = "securechat-refusal"

// The metadata key that asks the server for a room's events after an id.
const lastEventIDKey = "last-event-id"

const callTimeout = 20 * time.Second

func main() {
	dir := flag.String("dir", "", "a `securechat quickstart` directory (reads DIR/certs)")
	target := flag.String("target", "localhost:50051", "the server, HOST:PORT")
	room := flag.String("room", "", "the room to chat in (default: a fresh one per run)")
	flag.Parse()
	if *dir == "" {
		fail("--dir is required: pass a `securechat quickstart --dir DIR` directory")
	}
	if *room == "" {
		*room = "examples-go-" + randomID()[:8]
	}
	certs := filepath.Join(*dir, "certs")

	alice := dial(*target, certs, "alice")
	defer alice.Close()
	bob := dial(*target, certs, "bob")
	defer bob.Close()
	client := pb.NewChatServiceClient(alice)

	// Unary calls: the server names us from our certificate, not the payload.
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	reply, err := client.SayHello(ctx, &pb.HelloRequest{Name: "mallory"})
	cancel()
	check("SayHello", err)
	fmt.Printf("hello: %s\n", reply.GetMessage())

	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	me, err := client.WhoAmI(ctx, &pb.WhoAmIRequest{})
	cancel()
	check("WhoAmI", err)
	fmt.Printf("whoami: name=%s serial=%s not_after=%s\n", me.GetName(), me.GetSerial(), me.GetNotAfter())

	// Chat: join, send with a client_msg_id, read our echo (the
	// acknowledgement) and another member's message.
	chat := openChat(alice, "")
	check("join", chat.join(*room, "alice"))
	fmt.Printf("chat: joined room=%s\n", *room)

	text, msgID := "hello from go", randomID()
	check("send", chat.send(*room, text, msgID))
	echo, err := chat.until(func(ev *pb.ChatEvent) bool { return isMessage(ev, "alice", text) })
	check("echo", err)
	fmt.Printf("chat: echo id=%s sender=%s client_msg_id=%s text=%s\n", echo.GetId(), echo.GetSender(), msgID, echo.GetText())

	bobSays(bob, *room, "hello from bob (go)")
	other, err := chat.until(func(ev *pb.ChatEvent) bool { return isMessage(ev, "bob", "hello from bob (go)") })
	check("other member's message", err)
	fmt.Printf("chat: other id=%s sender=%s text=%s\n", other.GetId(), other.GetSender(), other.GetText())
	lastSeen := other.GetId()

	// Reconnect: drop the stream, miss a message, resume with last-event-id.
	chat.close()
	bobSays(bob, *room, "while you were away (go)")
	chat = openChat(alice, lastSeen)
	var replayed *pb.ChatEvent
	err = chat.joinSeeing(*room, "alice", func(ev *pb.ChatEvent) {
		if isMessage(ev, "bob", "while you were away (go)") {
			replayed = ev
		}
	})
	check("resume", err)
	if replayed == nil {
		fail(fmt.Sprintf("resume: the server did not replay the message sent after id %s", lastSeen))
	}
	fmt.Printf("resume: last-event-id=%s replayed id=%s sender=%s text=%s\n", lastSeen, replayed.GetId(), replayed.GetSender(), replayed.GetText())

	// Unsure whether a send landed (the stream broke)? Send it again with
	// the same client_msg_id: the server acknowledges it with the original
	// event and delivers it to nobody twice.
	check("retry", chat.send(*room, text, msgID))
	again, err := chat.until(func(ev *pb.ChatEvent) bool { return isMessage(ev, "alice", text) })
	check("retry echo", err)
	fmt.Printf("retry: client_msg_id=%s id=%s first_id=%s same_event=%t\n", msgID, again.GetId(), echo.GetId(), again.GetId() == echo.GetId())
	chat.close()

	// A refusal: the status says what happened, the trailing metadata says
	// why, as data a program can act on.
	chat = openChat(alice, "")
	check("send", chat.send("bad room!", "", ""))
	_, err = chat.until(func(*pb.ChatEvent) bool { return false })
	st := status.Convert(err)
	reason := first(chat.stream.Trailer().Get(refusalKey))
	fmt.Printf("refusal: code=%s reason=%s action=%s message=%s\n", codeName(st.Code()), orNone(reason), actionFor(reason), st.Message())
	chat.close()

	// Without a client certificate the server refuses the TLS handshake.
	anonymous := dialWithout(*target, certs)
	defer anonymous.Close()
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	_, err = pb.NewChatServiceClient(anonymous).SayHello(ctx, &pb.HelloRequest{Name: "mallory"})
	cancel()
	if err == nil {
		fail("SayHello without a client certificate succeeded; the server must require one")
	}
	fmt.Printf("no-client-cert: code=%s\n", codeName(status.Code(err)))
	fmt.Println("done")
}

// actionFor is what a client does about each refusal reason (the table in
// the top-level README's "Wire API"); an unknown one falls back to the code.
func actionFor(reason string) string {
	switch reason {
	case "invalid-room", "text-too-long", "bad-resume-id":
		return "fix-the-request" // resending the same message fails the same way
	case "rate-limited", "too-many-rooms", "too-many-streams", "too-many-connections":
		return "back-off-and-retry"
	case "slow-consumer", "feed-lost", "shutting-down", "stream-broken":
		return "reconnect-with-last-event-id" // nothing is lost
	case "broker-unavailable":
		return "resend-with-the-same-client-msg-id" // the message was not accepted
	case "history-gone":
		return "resume-from-securechat-resume-from"
	case "no-certificate", "bad-certificate", "revoked", "not-allowed":
		return "stop" // only a new certificate or permission helps
	case "":
		return "none-given"
	default:
		return "unknown-reason"
	}
}

type chatSession struct {
	stream pb.ChatService_ChatClient
	cancel context.CancelFunc
}

func openChat(conn *grpc.ClientConn, lastEventID string) *chatSession {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	if lastEventID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, lastEventIDKey, lastEventID)
	}
	stream, err := pb.NewChatServiceClient(conn).Chat(ctx)
	if err != nil {
		cancel()
		check("Chat", err)
	}
	return &chatSession{stream: stream, cancel: cancel}
}

func (s *chatSession) send(room, text, msgID string) error {
	return s.stream.Send(&pb.ChatMessage{Room: room, Text: text, ClientMsgId: msgID})
}

// join posts an empty message (joins without posting) and waits for our own
// JOIN event, so the membership is in place before anyone posts.
func (s *chatSession) join(room, me string) error {
	return s.joinSeeing(room, me, func(*pb.ChatEvent) {})
}

// joinSeeing is join, handing every event before our JOIN (the replayed
// history, on a resume) to seen.
func (s *chatSession) joinSeeing(room, me string, seen func(*pb.ChatEvent)) error {
	if err := s.send(room, "", ""); err != nil {
		return err
	}
	_, err := s.until(func(ev *pb.ChatEvent) bool {
		if ev.GetKind() == pb.ChatEvent_JOIN && ev.GetSender() == me && ev.GetRoom() == room {
			return true
		}
		seen(ev)
		return false
	})
	return err
}

func (s *chatSession) until(match func(*pb.ChatEvent) bool) (*pb.ChatEvent, error) {
	for {
		ev, err := s.stream.Recv()
		if err == io.EOF {
			return nil, errors.New("the server ended the stream")
		}
		if err != nil {
			return nil, err
		}
		if match(ev) {
			return ev, nil
		}
	}
}

func (s *chatSession) close() {
	_ = s.stream.CloseSend()
	s.cancel()
}

// bobSays posts TEXT as bob on a stream of its own and waits for bob's echo.
func bobSays(bob *grpc.ClientConn, room, text string) {
	s := openChat(bob, "")
	defer s.close()
	check("bob: send", s.send(room, text, randomID()))
	_, err := s.until(func(ev *pb.ChatEvent) bool { return isMessage(ev, "bob", text) })
	check("bob: echo", err)
}

func isMessage(ev *pb.ChatEvent, sender, text string) bool {
	return ev.GetKind() == pb.ChatEvent_MESSAGE && ev.GetSender() == sender && ev.GetText() == text
}

func dial(target, certs, name string) *grpc.ClientConn {
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, name+".pem"), filepath.Join(certs, name+"-key.pem"))
	if err != nil {
		fail(fmt.Sprintf("%s: %v. Run 'securechat quickstart --dir DIR' and pass --dir DIR", certs, err))
	}
	return connect(target, &tls.Config{RootCAs: caPool(certs), Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
}

func dialWithout(target, certs string) *grpc.ClientConn {
	return connect(target, &tls.Config{RootCAs: caPool(certs), MinVersion: tls.VersionTLS12})
}

func connect(target string, config *tls.Config) *grpc.ClientConn {
	conn, err := grpc.Dial(target, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	check("dial "+target, err)
	return conn
}

func caPool(certs string) *x509.CertPool {
	pem, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		fail(fmt.Sprintf("%v. Run 'securechat quickstart --dir DIR' and pass --dir DIR", err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail(filepath.Join(certs, "ca.pem") + ": no PEM certificate in it")
	}
	return pool
}

// codeName spells a status code as gRPC's docs do: INVALID_ARGUMENT.
func codeName(code codes.Code) string {
	if code == codes.OK {
		return "OK"
	}
	var b strings.Builder
	for i, r := range code.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func randomID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		fail("no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

func first(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func check(what string, err error) {
	if err != nil {
		st := status.Convert(err)
		fail(fmt.Sprintf("%s failed: %s %s", what, codeName(st.Code()), st.Message()))
	}
}

func fail(message string) {
	fmt.Fprintf(os.Stderr, "securechat-example: %s\n", message)
	os.Exit(1)
}
