package transport

// TrimTail exposes trimTail to the black-box tests.
var TrimTail = trimTail
