"""Generated from protos/securechat/v1/chat.proto by `make proto`. Never edit by hand."""
