module github.com/omqs-go/omqs

go 1.25

require (
	github.com/rabbitmq/amqp091-go v1.16.0
	go.uber.org/goleak v1.3.0
	gopkg.in/ini.v1 v1.68.0
	gopkg.in/natefinch/lumberjack.v2 v2.2.1
)
