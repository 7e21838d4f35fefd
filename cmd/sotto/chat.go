package main

func cmdChat(a *app, args []string) error { return notSupported("chat") }
