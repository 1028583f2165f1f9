/* list.h — intrusive doubly-linked lists: an object that sits on one list embeds `prev` and `next`
 * pointers of its own type, and the list is a pointer to its first element (NULL when empty). No
 * allocation, O(1) push and unlink; the list owns nothing (whoever put the object there frees it).
 *
 * The macros take the head pointer by name and the element's link field names, so one object can
 * sit on two lists through two pairs of fields:
 *     LIST_PUSH(a->conns, k, prev, next);      LIST_UNLINK(a->conns, k, prev, next);
 * An unlinked element has both links NULL, so unlinking twice is harmless.
 */
#ifndef LIFELINE_LIST_H
#define LIFELINE_LIST_H

#include <stddef.h>

/* Puts elem first on the list starting at head. */
#define LIST_PUSH(head, elem, prev, next)                                                          \
    do {                                                                                           \
        (elem)->prev = NULL;                                                                       \
        (elem)->next = (head);                                                                     \
        if (head)                                                                                  \
            (head)->prev = (elem);                                                                 \
        (head) = (elem);                                                                           \
    } while (0)

/* Takes elem off the list starting at head; elem must be on it, or already unlinked (both links
 * NULL and not the head). */
#define LIST_UNLINK(head, elem, prev, next)                                                        \
    do {                                                                                           \
        if ((elem)->prev)                                                                          \
            (elem)->prev->next = (elem)->next;                                                     \
        else if ((head) == (elem))                                                                 \
            (head) = (elem)->next;                                                                 \
        if ((elem)->next)                                                                          \
            (elem)->next->prev = (elem)->prev;                                                     \
        (elem)->prev = (elem)->next = NULL;                                                        \
    } while (0)

/* The same for a list that also keeps its last element (tail): pushed first, appended last. */
#define LIST_PUSH_T(head, tail, elem, prev, next)                                                  \
    do {                                                                                           \
        LIST_PUSH(head, elem, prev, next);                                                         \
        if (!(tail))                                                                               \
            (tail) = (elem);                                                                       \
    } while (0)

#define LIST_APPEND_T(head, tail, elem, prev, next)                                                \
    do {                                                                                           \
        (elem)->next = NULL;                                                                       \
        (elem)->prev = (tail);                                                                     \
        if (tail)                                                                                  \
            (tail)->next = (elem);                                                                 \
        else                                                                                       \
            (head) = (elem);                                                                       \
        (tail) = (elem);                                                                           \
    } while (0)

#define LIST_UNLINK_T(head, tail, elem, prev, next)                                                \
    do {                                                                                           \
        if ((tail) == (elem))                                                                      \
            (tail) = (elem)->prev;                                                                 \
        LIST_UNLINK(head, elem, prev, next);                                                       \
    } while (0)

#endif
