package testpki

// OpenToken is openToken, for the tests.
var OpenToken = openToken
