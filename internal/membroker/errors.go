package membroker

import (
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// codeNames are the AMQP 0-9-1 reply code names RabbitMQ puts in front of the
// text of a channel or connection close.
var codeNames = map[int]string{
	amqp.ContentTooLarge:    "CONTENT_TOO_LARGE",
	amqp.NoRoute:            "NO_ROUTE",
	amqp.NoConsumers:        "NO_CONSUMERS",
	amqp.ConnectionForced:   "CONNECTION_FORCED",
	amqp.InvalidPath:        "INVALID_PATH",
	amqp.AccessRefused:      "ACCESS_REFUSED",
	amqp.NotFound:           "NOT_FOUND",
	amqp.ResourceLocked:     "RESOURCE_LOCKED",
	amqp.PreconditionFailed: "PRECONDITION_FAILED",
	amqp.FrameError:         "FRAME_ERROR",
	amqp.SyntaxError:        "SYNTAX_ERROR",
	amqp.CommandInvalid:     "COMMAND_INVALID",
	amqp.ChannelError:       "CHANNEL_ERROR",
	amqp.UnexpectedFrame:    "UNEXPECTED_FRAME",
	amqp.ResourceError:      "RESOURCE_ERROR",
	amqp.NotAllowed:         "NOT_ALLOWED",
	amqp.NotImplemented:     "NOT_IMPLEMENTED",
	amqp.InternalError:      "INTERNAL_ERROR",
}

// softCode reports whether code is a channel-level (soft) error; the others
// close the whole connection. Same table as amqp091's.
func softCode(code int) bool {
	switch code {
	case 311, 312, 313, 403, 404, 405, 406:
		return true
	}
	return false
}

// serverError builds the error RabbitMQ sends in channel.close or
// connection.close: "NAME - text".
func serverError(code int, format string, args ...any) *amqp.Error {
	return &amqp.Error{
		Code:    code,
		Reason:  codeNames[code] + " - " + fmt.Sprintf(format, args...),
		Server:  true,
		Recover: softCode(code),
	}
}

// rs formats a resource name as rabbit_misc:rs does.
func rs(kind, name string) string {
	return fmt.Sprintf("%s '%s' in vhost '/'", kind, name)
}

func errNoQueue(name string) *amqp.Error {
	return serverError(amqp.NotFound, "no %s", rs("queue", name))
}

func errNoExchange(name string) *amqp.Error {
	return serverError(amqp.NotFound, "no %s", rs("exchange", name))
}

func errDefaultExchange() *amqp.Error {
	return serverError(amqp.AccessRefused, "operation not permitted on the default exchange")
}

func errLocked(name string) *amqp.Error {
	return serverError(amqp.ResourceLocked,
		"cannot obtain exclusive access to locked %s. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
		rs("queue", name))
}

func errNoPreviousQueue() *amqp.Error {
	return serverError(amqp.NotFound, "no previously declared queue")
}

// errShortstr is what amqp091 returns when a short string does not fit in
// 255 bytes; it cannot encode the frame.
func errShortstr(s string) error {
	return fmt.Errorf("amqp: shortstr %q exceeds 255 bytes", s)
}

// checkShort returns errShortstr for the first string longer than 255 bytes.
func checkShort(ss ...string) error {
	for _, s := range ss {
		if len(s) > 255 {
			return errShortstr(s)
		}
	}
	return nil
}
