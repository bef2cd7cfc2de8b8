// work_queue.c: see work_queue.h.
#include "work_queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct work_item {
    void *item;
    struct work_item *next;
};

struct work_queue {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct work_item *head;
    struct work_item *tail;
    int length;
    int closed;
};

work_queue *work_queue_create(void)
{
    work_queue *queue = calloc(1, sizeof(*queue));
    if (!queue)
        return NULL;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&queue->lock, NULL);
    pthread_cond_init(&queue->ready, &attr);
    pthread_condattr_destroy(&attr);
    return queue;
}

void work_queue_destroy(work_queue *queue)
{
    if (!queue)
        return;
    while (queue->head) {
        struct work_item *next = queue->head->next;
        free(queue->head);
        queue->head = next;
    }
    pthread_mutex_destroy(&queue->lock);
    pthread_cond_destroy(&queue->ready);
    free(queue);
}

int work_queue_push(work_queue *queue, void *item)
{
    struct work_item *node = malloc(sizeof(*node));
    if (!node)
        return -1;
    node->item = item;
    node->next = NULL;
    pthread_mutex_lock(&queue->lock);
    if (queue->tail)
        queue->tail->next = node;
    else
        queue->head = node;
    queue->tail = node;
    queue->length++;
    pthread_cond_signal(&queue->ready);
    pthread_mutex_unlock(&queue->lock);
    return 0;
}

void *work_queue_pop(work_queue *queue, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&queue->lock);
    while (!queue->head && !queue->closed && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&queue->ready, &queue->lock);
        } else if (pthread_cond_timedwait(&queue->ready, &queue->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    void *item = NULL;
    struct work_item *node = queue->head;
    if (node) {
        queue->head = node->next;
        if (!queue->head)
            queue->tail = NULL;
        queue->length--;
        item = node->item;
    }
    pthread_mutex_unlock(&queue->lock);
    free(node);
    return item;
}

void work_queue_close(work_queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    queue->closed = 1;
    pthread_cond_broadcast(&queue->ready);
    pthread_mutex_unlock(&queue->lock);
}

int work_queue_length(work_queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    int length = queue->length;
    pthread_mutex_unlock(&queue->lock);
    return length;
}
