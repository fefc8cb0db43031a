package wiretest

// OddEvents are event params as they may come over the wire, chosen to
// reach every rule of the line format: reserved-key collisions, numbers
// that JSON writes several ways, strings that need escaping, unicode,
// nested data, zero and non-UTC timestamps.
var OddEvents = []string{
	`{"name":"tick","timestamp":"2026-11-27T03:28:37.392082914Z","step_id":"stream","data":{"i":123456}}`,
	`{"name":"plain","timestamp":"2026-11-27T03:28:37Z"}`,
	`{"name":"empty data","timestamp":"2026-11-27T03:28:37Z","data":{}}`,
	`{"name":"zero time","data":{"a":1}}`,
	`{"name":"offset","timestamp":"2026-11-27T05:28:37.5+02:00","data":{"a":1}}`,
	`{"name":"reserved","timestamp":"2026-11-27T03:28:37Z","step_id":"s","data":{"ts":1,"seq":2,"session":3,"event":4,"metric":5,"value":6,"value_invalid":7,"step_id":8,"unit":9}}`,
	`{"name":"reserved chain","timestamp":"2026-11-27T03:28:37Z","data":{"ts":"a","data.ts":"b","data.data.ts":"c","seq":"d"}}`,
	`{"name":"numbers","timestamp":"2026-11-27T03:28:37Z","data":{"int":42,"neg":-7,"negzero":-0,"zero":0,"frac":1.50,"exp":1E+2,"tiny":1e-7,"huge":1e21,"max":1.7976931348623157e308,"big":12345678901234567890,"d15":999999999999999,"d16":9999999999999999,"one":1.0}}`,
	`{"name":"nan-ish","timestamp":"2026-11-27T03:28:37Z","data":{"nan":"NaN","inf":"+Inf","null":null,"t":true,"f":false}}`,
	`{"name":"unicode é 世界 🎉","timestamp":"2026-11-27T03:28:37Z","step_id":"schritt-ü","data":{"clé":"valeur é","emoji":"🎉","ls":"a\u2028b","raw":"\u00e9"}}`,
	`{"name":"esc\"aped\\\n","timestamp":"2026-11-27T03:28:37Z","data":{"html":"<a href=\"x\">&amp;</a>","escaped html":"\u003cb\u003e","ctl":"tab\there\u0001","slash":"a\/b","k\u0065y":"escaped key","bad surrogate":"\ud800x"}}`,
	`{"name":"nested","timestamp":"2026-11-27T03:28:37Z","data":{"obj":{"z":1,"a":[1,2.5,"<x>",{"n":null}],"m":{"ts":1}},"arr":[],"o":{},"deep":[[[[{"k":[1e-9]}]]]]}}`,
	`{"name":"spaces" , "timestamp" : "2026-11-27T03:28:37Z" , "data" : { "a" : [ 1 , 2 ] , "b" : { } } }`,
	`{"name":"dup","timestamp":"2026-11-27T03:28:37Z","data":{"a":1,"a":2}}`,
	`{"name":"case","Data":{"a":1}}`,
}
