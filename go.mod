module github.com/omqs-go/omqs

go 1.26.8

require (
	github.com/rabbitmq/amqp091-go v1.16.0
	go.uber.org/goleak v1.3.0
)
