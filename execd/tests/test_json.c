/*
 * test_json.c: the JSON reader and the escaping writer.
 */
#include "../src/json.h"
#include "test.h"

void suite_json(void)
{
    const char *s = "{\"command\":\"echo \\\"hi\\\" \\u00e9\\ud83d\\ude00\",\"timeout\":1500,"
                    "\"background\":true,\"envs\":{\"A\":\"1\"},\"a\":1,\"a\":2}";
    struct json *j = json_parse(s, strlen(s));
    long long v;
    struct buf b = {0};

    CHECK(j && j->type == JSON_OBJECT);
    CHECK_STR(json_get(j, "command")->str, "echo \"hi\" \xC3\xA9\xF0\x9F\x98\x80");
    CHECK(json_int(json_get(j, "timeout"), 1, 100000, &v) && v == 1500);
    CHECK(json_get(j, "background")->type == JSON_TRUE);
    CHECK_STR(json_get(json_get(j, "envs"), "A")->str, "1");
    CHECK(json_int(json_get(j, "a"), 0, 10, &v) && v == 2); /* last duplicate wins */
    CHECK(!json_int(json_get(j, "command"), 0, 10, &v));
    json_free(j);

    CHECK(json_parse("", 0) == NULL);
    CHECK(json_parse("{", 1) == NULL);
    CHECK(json_parse("{\"a\":1,}", 8) == NULL);
    CHECK(json_parse("[1] x", 5) == NULL);
    CHECK(json_parse("\"\xFF\"", 3) == NULL);    /* invalid UTF-8 */
    CHECK(json_parse("\"\\ud800\"", 8) == NULL); /* lone surrogate */
    CHECK(json_parse("01", 2) == NULL);
    {
        char deep[200];
        memset(deep, '[', sizeof(deep));
        CHECK(json_parse(deep, sizeof(deep)) == NULL);
    }
    j = json_parse("1.5", 3);
    CHECK(j && !json_int(j, 0, 10, &v));
    json_free(j);

    json_put_str(&b, "a\"\\\n\x01\xFFz", 7);
    CHECK_STR(b.data, "\"a\\\"\\\\\\n\\u0001\xEF\xBF\xBDz\"");
    buf_free(&b);
}
